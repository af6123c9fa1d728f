"""DCGAN Studio web app (placeholder until the full UI lands): python app.py."""

import gradio as gr

from ui.state import Studio

studio = Studio()

with gr.Blocks(title="DCGAN Studio") as demo:
    gr.Markdown("# DCGAN Studio")

if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1", server_port=7860)
