"""Serve a GGUF with llama-cpp-python's OpenAI-compatible server: ``python -m llama_cpp.server``.

    .venv/bin/python hack/llama-server.py --model PATH [llama_cpp.server options...]

The same server, with one change: the model loads without ggml's extra CPU buffer types
(``use_extra_bufts`` off). On a CPU with AMX, a native build routes matrix products of
SmolLM2's Q4_1 weights to ggml's AMX kernels, which crash (a general protection fault in
``ggml_backend_amx_mul_mat``); the plain CPU kernels answer the same. llama-cpp-python has no
option for it, so the default model parameters are wrapped before the server starts.
"""

from __future__ import annotations

import runpy

import llama_cpp.llama_cpp as bindings

_default_params = bindings.llama_model_default_params


def _without_extra_buffer_types() -> bindings.llama_model_params:
    params = _default_params()
    params.use_extra_bufts = False
    return params


bindings.llama_model_default_params = _without_extra_buffer_types
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
