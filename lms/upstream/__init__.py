"""OpenAI-compatible servers behind lms (`lms upstream add NAME URL`): a vLLM cluster, a llama-server or another
lms. Their models are listed as NAME/<model> and served through every lms surface; templates and sampling run
upstream, while Responses state, the Anthropic and Ollama translations and tool loops stay here."""
