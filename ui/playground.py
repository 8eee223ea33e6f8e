"""The staff playground: ask as any channel and see why the bot answered what it answered."""

import gradio as gr

from chatbot.service import ChatService
from chatbot.settings import Settings


def create_playground(service: ChatService, settings: Settings) -> gr.Blocks:
    with gr.Blocks(title="Playground", analytics_enabled=False) as blocks:
        gr.Markdown("## Playground")
    return blocks
