"""The frontend process: serves clients over TCP and forwards their work to the store in batches."""
