"""Local LLM servers (Ollama): API client, loaded-model sessions, recording proxy, energy join."""
