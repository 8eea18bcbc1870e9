"""The llama.cpp runtime, on llama-cpp-python."""
