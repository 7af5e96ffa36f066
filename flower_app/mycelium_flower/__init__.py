"""Mycelium Net's Flower app: a torch-free ServerApp and a ClientApp that forwards to a warm
trainer. See docs/flower.md."""
