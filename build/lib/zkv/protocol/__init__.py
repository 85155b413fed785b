"""Wire formats of the client port, pure: bytes in, requests out; replies in, bytes out."""
