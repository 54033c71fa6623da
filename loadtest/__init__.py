"""Load tests for OpenAI-compatible LLM servers (sambay-serve, `vllm serve`, others).

`locustfile.py` drives the load; `workload.py` and `stream_client.py` (with `sambay_client.sse`
and `sambay_client.metrics`, shared with sambay-bench) hold everything that can be tested
without Locust; `report.py` and `sweep.py` turn run directories
into tables, JSON and plots. See README.md in this folder.
"""
