"""Load tests for OpenAI-compatible LLM servers (sambay-serve, `vllm serve`, others).

`locustfile.py` drives the load; `sse.py`, `metrics.py`, `workload.py` and `stream_client.py` hold
everything that can be tested without Locust; `report.py` and `sweep.py` turn run directories
into tables, JSON and plots. See README.md in this folder.
"""
