"""The conversation core: settings, LLM providers, prompts, chain, service and CLI."""
