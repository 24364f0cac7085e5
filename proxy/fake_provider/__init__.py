"""The fake provider: a stand-in for OpenAI, Anthropic, Google Gemini and Azure OpenAI, speaking their
public wire formats, for dev, tests and benchmarks. Deterministic: the same request gets the same answer.

Run it:  python -m proxy.fake_provider --host 127.0.0.1 --port 8090

Auth: a key is valid iff it starts with `fake-`; anything else gets the provider's own 401 envelope.

Routes
    OpenAI format (Bearer):      GET /v1/models, POST /v1/chat/completions (streaming or not, tools,
                                 usage incl. cached and reasoning details), POST /v1/embeddings,
                                 POST /v1/responses (streaming or not, function calls, the `web_search`
                                 tool: `max_tool_calls` web_search_call items, default 1)
    Anthropic (x-api-key):       GET /v1/models, POST /v1/messages (streaming or not, tool use, cache
                                 read/write usage, the server-side web search tool: `max_uses` searches,
                                 default 1, reported in usage.server_tool_use), POST /v1/messages/count_tokens
                                 (told apart from OpenAI by `x-api-key`/`anthropic-version`)
    Gemini (x-goog-api-key/?key): GET /v1beta/models, POST /v1beta/models/{m}:generateContent,
                                 :streamGenerateContent?alt=sse, :embedContent, :batchEmbedContents
    Azure OpenAI (api-key):      GET /openai/models?api-version=…, POST /openai/deployments/{d}/
                                 chat/completions|embeddings?api-version=…, POST /openai/v1/…
                                 (answers as the OpenAI model behind the deployment)

Controls, per request, as headers or as suffixes on the model name (`gpt-4o-mini@status=429;latency=50`):
    x-fake-latency-ms / latency=N        wait N ms before answering
    x-fake-ttfb-ms / ttfb=N              streams: wait N ms before the first chunk
    x-fake-chunk-delay-ms / chunk_delay=N  streams: wait N ms between chunks
    x-fake-status / status=N             answer with this HTTP status and the provider's error envelope
    x-fake-retry-after / retry_after=N   the Retry-After value sent with 429/503 (default 1)
    x-fake-output-words / words=N        words in the answer (default 12)
    x-fake-cached-tokens / cached=N      report N prompt tokens as cached
    x-fake-reasoning-tokens / reasoning=N  report N completion tokens as reasoning (Gemini: thoughts)
    x-fake-cache-write / cache_write=N   Anthropic: report N cache-creation input tokens
    x-fake-no-usage / no_usage=1         streams: never send usage (even if asked)
    x-fake-usage-tokens / usage_tokens=N  OpenAI format: report N prompt and N completion tokens, whatever
                                         was sent (a misbehaving self-hosted server; N may exceed 2^63)
"""
