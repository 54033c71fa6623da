"""The documented math evaluation, end to end: lm-evaluation-harness's chat-completions client against
sambay-serve, running the sambay_math500 task (the card's sampling, math-verify scoring) on a small local
dataset written here; MATH-500 itself is downloaded by users, not by tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sambay_eval.tasks import TASKS_DIR
from sambay_eval.tasks.utils import INSTRUCTION

pytestmark = pytest.mark.engine
DOCS = [
    {"problem": "What is $2+3$?", "answer": "5"},
    {"problem": "Simplify $\\frac{2}{4}$.", "answer": "\\frac{1}{2}"},
    {"problem": "How many primes are below 10?", "answer": "4"},
]


def test_lm_eval_runs_the_math500_task_against_sambay_serve(server, tmp_path):
    data = tmp_path / "math500.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tmp_path / "local_math500.yaml").write_text(
        f"include: {TASKS_DIR / 'sambay_math500.yaml'}\n"
        "task: local_math500\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
    )
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "lm_eval", "--model", "local-chat-completions",
        "--model_args", f"base_url={server['base']}/v1/chat/completions,model=sambay-tiny,num_concurrent=2,"
        "max_retries=1,tokenized_requests=False",
        "--tasks", "local_math500", "--include_path", str(tmp_path), "--apply_chat_template",
        "--gen_kwargs", "max_gen_toks=24", "--output_path", str(out), "--log_samples",
    ]  # fmt: skip
    env = {**os.environ, "OPENAI_API_KEY": server["api_key"], "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads(next(out.rglob("results_*.json")).read_text())
    metrics = results["results"]["local_math500"]
    assert results["n-samples"]["local_math500"]["effective"] == len(DOCS)
    # random weights: no boxed answers, so nothing answered and nothing right; the pipeline ran
    assert metrics["accuracy,none"] == 0.0 and metrics["answered,none"] == 0.0
    samples = [json.loads(line) for line in next(out.rglob("samples_local_math500_*.jsonl")).read_text().splitlines()]
    assert len(samples) == len(DOCS) and all(s["resps"][0][0] for s in samples)  # each got a response
    sampling = samples[0]["arguments"]["gen_args_0"]["arg_1"]
    assert (sampling["temperature"], sampling["top_p"], sampling["max_gen_toks"]) == (0.6, 0.95, 24)
    prompt = samples[0]["arguments"]["gen_args_0"]["arg_0"]
    messages = json.loads(prompt[0] if isinstance(prompt, list) else prompt)
    assert messages == [{"role": "user", "content": f"{DOCS[0]['problem']}\n\n{INSTRUCTION}"}]
