"""The 8 chat prompts greedy text is compared on: HF vs lmrt (tests/test_greedy_default_model.py) and each KV cache
dtype vs fp32 KV (benchmarks/kv_quality.py, kv_schemes.py, through benchmarks/results_log.py)."""

CHAT_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three fruits that are red.",
    "Translate 'good morning' into Spanish and German.",
    "Write a Python function that returns the square of a number.",
    "What is 17 + 25? Answer with the number.",
    "Give me a short tip for learning to cook.",
]
