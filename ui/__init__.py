"""Web front ends: thin adapters that turn browser input into ChatService calls."""
