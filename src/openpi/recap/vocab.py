"""The RECAP vocabulary, defined once: the per-frame column names and the advantage-indicator values.

RECAP (shared/design/RECAP.md) stores five per-frame columns and conditions the policy on one word per frame.
The same strings are written by the labeller (`recap.labels`), relabelled by the value model (`recap.advantage`,
`relabel.relabel`), checked on datasets (`datasets.recap_columns`) and put into prompts (`models.tokenizer`); they
all import them from here so a spelling cannot drift between writer and reader. Plain strings only: importing this
module pulls in neither numpy nor JAX, so scripts and data tools can use it cheaply.

One name per idea in code, CLI and docs:
- `adv_ind` is the column and the per-frame value ("the indicator"); its values are `positive` / `negative` /
  `none` (none = no advantage clause: the unconditional pi0.5 prompt).
- `intervention` is 1 on human frames (corrections, demonstrations), 0 on autonomous (policy) frames.
"""

# The five per-frame RECAP columns, in the order RECAP.md lists them.
INTERVENTION = "intervention"
REWARD = "reward"
REWARD_LABEL = "reward_label"
VALUE_LABEL = "value_label"
ADV_IND = "adv_ind"
COLUMNS = (INTERVENTION, REWARD, REWARD_LABEL, VALUE_LABEL, ADV_IND)
# LeRobot's own per-frame task column, which the per-task thresholds group by.
TASK_INDEX = "task_index"

# Older converters misspelt value_label; readers accept either spelling.
LEGACY_NAMES = {VALUE_LABEL: ("value_lable",)}

# Values of `adv_ind`.
POSITIVE = "positive"
NEGATIVE = "negative"
NONE = "none"
ADV_IND_VALUES = (POSITIVE, NEGATIVE, NONE)
# The values that put an advantage clause into the prompt.
INDICATORS = (POSITIVE, NEGATIVE)
# Spellings that mean "no indicator" (the unconditional prompt): `none` and an empty string.
NO_INDICATOR = (NONE, "")


def is_indicator(value: object) -> bool:
    """The one rule for an `adv_ind` value, stored in a dataset or sent to a server: exactly one of the three words.

    A string equal to "positive", "negative" or "none": no case folding, no stripped whitespace, no None / "" /
    NaN / bytes / booleans. The dataset check (`datasets.recap_columns.check_indicator_column`) and the server
    (`models.tokenizer.parse_indicator`) both apply this function, so a value one side refuses the other refuses
    too: "None" or "POSITIVE" is a client or labelling bug to report, not a spelling to guess at.
    """
    return isinstance(value, str) and value in ADV_IND_VALUES
