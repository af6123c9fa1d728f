"""Gradio tabs of DCGAN Studio. The UI calls the dcgan package, never the reverse."""
