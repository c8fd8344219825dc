"""A small episode loop for robot clients: an `Environment`, an `Agent`, a `Runtime`, and `Subscriber` hooks.

The split keeps hardware (or a simulator) behind `Environment`, the decision maker (usually a remote policy
wrapped in `agents.policy_agent.PolicyAgent`) behind `Agent`, and logging, recording or video behind
`Subscriber`, so the same loop drives a real robot, a simulated one and an evaluation run.
"""
