"""Where weights and tokenizers live on disk, and how a configured location becomes a local path.

Openpi configs name remote artefacts (`gs://big_vision/paligemma_tokenizer.model`,
`gs://openpi-assets/checkpoints/pi05_base/params`) and openpi caches them under `$OPENPI_DATA_HOME`
(default `~/.cache/openpi`) as `<cache>/<bucket>/<path>`. This project runs where nothing can be
fetched, so `maybe_download` keeps that exact cache layout (a user can copy an existing openpi cache
over, or download the file by hand into the place it names) but never touches the network: a remote
location that is not already cached is an error that says where to put the file.
"""

import os
import pathlib
import urllib.parse

from openpi.shared import errors

OPENPI_DATA_HOME = "OPENPI_DATA_HOME"
DEFAULT_CACHE_DIR = "~/.cache/openpi"

_REMOTE_SCHEMES = ("gs", "s3", "http", "https")


class ArtefactNotFoundError(errors.UserError, FileNotFoundError):
    """A configured weight, tokenizer or asset is neither a local path nor in the cache."""


def get_cache_dir(*, create: bool = True) -> pathlib.Path:
    """The cache root: `$OPENPI_DATA_HOME` if set, else `~/.cache/openpi` (absolute, created on demand)."""
    cache_dir = pathlib.Path(os.environ.get(OPENPI_DATA_HOME) or DEFAULT_CACHE_DIR).expanduser().resolve()
    if create:
        cache_dir.mkdir(parents=True, exist_ok=True)
    return cache_dir


def is_remote(url_or_path: str | os.PathLike) -> bool:
    """True for `gs://`, `s3://`, `http(s)://` locations (which need the cache), False for local paths."""
    return urllib.parse.urlparse(str(url_or_path)).scheme in _REMOTE_SCHEMES


def cache_path(url: str) -> pathlib.Path:
    """Where openpi's cache keeps a remote `url`: `<cache>/<bucket or host>/<path>`."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in _REMOTE_SCHEMES:
        raise ValueError(f"{url!r} is not a remote location (expected one of {', '.join(_REMOTE_SCHEMES)}).")
    return get_cache_dir(create=False) / parsed.netloc / parsed.path.strip("/")


def maybe_download(url_or_path: str | os.PathLike) -> pathlib.Path:
    """Resolves a configured location to an existing absolute local path, without any network access.

    Local paths (plain, `~`-prefixed or `file://`) must exist. Remote locations resolve to their copy in
    the openpi cache when it is there; otherwise `ArtefactNotFoundError` says where to put the file.
    """
    text = str(url_or_path)
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme == "file":
        if not parsed.path:
            raise ArtefactNotFoundError(f"{text!r} names no file; give an absolute path such as file:///data/x.")
        local = pathlib.Path(urllib.parse.unquote(parsed.path))
    elif parsed.scheme in _REMOTE_SCHEMES:
        local = cache_path(text)
        if not local.exists():
            raise ArtefactNotFoundError(
                f"{text} is not in the local cache and this build cannot download it: fetch it yourself "
                f"(e.g. `gsutil cp -r {text} {local}`) into {local} (the cache root is ${OPENPI_DATA_HOME}, "
                f"default {DEFAULT_CACHE_DIR}), or pass its local path instead."
            )
        return local.resolve()
    elif parsed.scheme and len(parsed.scheme) > 1:
        raise ArtefactNotFoundError(
            f"{text!r} uses the unsupported scheme {parsed.scheme!r}; pass a local path or a gs:// / https:// "
            "location that is already cached."
        )
    else:
        local = pathlib.Path(text)
    local = local.expanduser()
    if not local.exists():
        raise ArtefactNotFoundError(f"{local} does not exist; check the path in your config or command line.")
    return local.resolve()
