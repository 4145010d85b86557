"""The client SDK: publish events, subscribe to results, ask and await an answer, generate load."""
