"""``gpt2 serve``: one ASGI server with an OpenAI-compatible completions API and the Gradio web app.

* :mod:`gpt2.serve.engine`: the batched decoding engine every request goes through;
* :mod:`gpt2.serve.api`: ``/v1/completions``, ``/v1/models``, ``/health`` (FastAPI);
* :mod:`gpt2.serve.ui`: the Gradio page, mounted on the same FastAPI app;
* :mod:`gpt2.serve.server`: the app assembled (auth, body-size limit, upload block) and run with uvicorn;
* :mod:`gpt2.serve.cli`: the light ``add_serve_arguments`` / ``run_serve`` of the command line.
"""
