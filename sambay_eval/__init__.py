"""Evaluate a served SambaY model the way its model card reports it: math reasoning benchmarks
(MATH-500, AIME 2024/2025) through lm-evaluation-harness against any OpenAI-compatible endpoint
(sambay-serve, ``vllm serve``), with answers judged by math-verify.

Why this package and not lm-eval's own ``minerva_math500`` / ``aime24`` tasks: those are few-shot
completion prompts judged by string normalisation, scored on the whole output; a reasoning model is
asked in chat, thinks first, and its answer is the last ``\\boxed{}`` after ``</think>``. The tasks here
keep lm-eval's machinery (datasets, request scheduling, aggregation, logging) and only say what to ask,
with which sampling (the card's: temperature 0.6, top_p 0.95, up to 32768 new tokens) and how to read
the answer (:mod:`sambay_eval.answers`).

No torch, no vLLM: it runs on a laptop against a remote server. ``python -m sambay_eval.tasks`` prints
the directory to pass to ``lm_eval --include_path``.
"""
