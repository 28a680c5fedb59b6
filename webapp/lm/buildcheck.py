"""`python -m webapp.lm.buildcheck`: one forward pass of the embedded model, run by `make install`.

Why: pip compiles llama.cpp for the CPU it sees (GGML_NATIVE). Some virtual machines report
instructions they then refuse; on one such machine (Intel Xeon with AMX flags) every forward pass
died of an illegal instruction (SIGILL, exit 132), taking the test run with it. The Makefile reads
that exit code and rebuilds llama.cpp for any x86-64 CPU with AVX2 (GGML_NATIVE=OFF).
"""

from __future__ import annotations

from webapp.config import DEFAULT_MODEL
from webapp.lm import load_model


def main() -> None:
    model = load_model(DEFAULT_MODEL, max_tokens=16, n_threads=1)
    model.score(model.tokenize("The cat sat on the mat."), 1)
    print(f"llama.cpp runs on this CPU ({model.name}: one forward pass)")


if __name__ == "__main__":
    main()
