"""Names, enumerations and defaults of the router config format (docs/router-config.md).

The one place they are written: ``tierwise.api`` takes the CRD defaults that reach the
document from here, ``tierwise.render`` and the router both build and read the document with
``tierwise.routerconfig``.
"""

from __future__ import annotations

import re
from decimal import Decimal

SCHEMA_VERSION = "tierwise.dev/router-config/v1"
CONFIG_KEY = "router-config.json"  # the ConfigMap key and file name the router reads

MODEL_ALIAS_PREFIX = "tierwise/"  # request `model: tierwise/<route>` selects a route
ROUTE_HEADER = "x-tierwise-route"  # ... and so does this header

DEFAULT_ENDPOINT = "https://api.anthropic.com"
ANTHROPIC, OPENAI = "anthropic", "openai"
# anthropic: the Messages API; openai: an OpenAI-compatible Chat Completions server (vLLM,
# llama.cpp, Ollama, TGI, SGLang) that the router translates for, and that can return token
# log-probabilities (the answerProbabilityBelow signal).
PROVIDERS = frozenset({ANTHROPIC, OPENAI})
# How an openai tier is asked for an answer matching the step's JSON schema (docs/router.md,
# "Structured output"): none (not asked), jsonSchema (``response_format`` type json_schema,
# OpenAI's own form, also vLLM's, llama.cpp's llama-server's, Ollama's, SGLang's) or
# jsonObject (type json_object with a ``schema``: llama-cpp-python's form).
STRUCTURED_OUTPUTS = ("none", "jsonSchema", "jsonObject")
MODES = frozenset({"interactive", "batch"})
STREAM_POLICIES = frozenset({"cascade", "strongestOnly"})
BREAKPOINT_KINDS = ("tools", "system", "history")  # prompt order, also insertion order
CACHE_TTLS = ("5m", "1h")
FALLBACK_FAILURES = frozenset({"overloaded", "rateLimited", "serverError", "timeout"})
CACHE_BACKENDS = frozenset({"memory", "redis"})
EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")  # output_config.effort
THINKING_TYPES = frozenset({"adaptive", "enabled", "disabled"})
MIN_THINKING_BUDGET = 1024  # the API's minimum thinking.budget_tokens
# A route's use of the response cache: auto (deterministic requests, or a client opt-in),
# always (every exact repeat), never.
RESPONSE_CACHE_MODES = frozenset({"auto", "always", "never"})
# What a route does with a prompt over its input budget.
ON_EXCEED = frozenset({"reject", "dropOldestTurns", "truncateToolResults"})

# Tier limits.
DEFAULT_TIMEOUT_SECONDS = 60
DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_MIN_CACHEABLE_TOKENS = 1024

# Retries.
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_INITIAL_BACKOFF_SECONDS = Decimal("0.25")
DEFAULT_MAX_BACKOFF_SECONDS = Decimal("8")

# Prompt caching.
DEFAULT_CACHE_TTL = "5m"
MAX_BREAKPOINTS = 4  # the API rejects more cache_control blocks per request
DEFAULT_BREAKPOINTS = ("tools", "system")  # a CacheProfile's promptCaching default

# Response cache.
DEFAULT_RESPONSE_CACHE_TTL_SECONDS = 300
DEFAULT_RESPONSE_CACHE_MAX_ENTRIES = 10_000
DEFAULT_CACHE_BACKEND = "memory"


def api_key_env(tier_name: str) -> str:
    """TIERWISE_TIER_<NAME>_API_KEY: NAME is the tier's name upper-cased with '-' as '_'
    and '.' kept, so two valid tier names (lower-case letters, digits, '-' and '.') never
    share a variable (``haiku-v2`` → ``..._HAIKU_V2_...``, ``haiku.v2`` → ``..._HAIKU.V2_...``;
    Kubernetes accepts '.' in environment variable names). Other characters, which no
    Kubernetes object name holds, become '_': ``render`` refuses any collision that leaves."""
    return f"TIERWISE_TIER_{re.sub(r'[^A-Z0-9.]', '_', tier_name.upper())}_API_KEY"


# The sidecar's variables for Redis credentials (one cache profile per policy), and where
# a Redis client certificate is mounted.
REDIS_URL_ENV = "TIERWISE_REDIS_URL"
REDIS_PASSWORD_ENV = "TIERWISE_REDIS_PASSWORD"
REDIS_TLS_DIR = "/var/run/tierwise/redis-tls"


def route_alias(route_name: str) -> str:
    """The model alias that always selects a route."""
    return MODEL_ALIAS_PREFIX + route_name
