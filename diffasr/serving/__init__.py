"""`diffasr serve`: the HTTP and WebSocket server and its web page.

serve.py          the FastAPI app (OpenAI-compatible /v1/audio/transcriptions, /health, the page) and the command
batcher.py        groups concurrent requests into one model batch
limits.py         bounds on clients: uvicorn protocol limits, the ASGI guard, admission control
stream_server.py  /v1/stream: live transcription over a WebSocket
web/              the page (index.html, steps.js), shipped as package data
"""
