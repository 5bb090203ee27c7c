"""Key material: the node master key and fleet key files, tenant data keys in their own key
store (keys/data-keys.sqlite), and sealed comments (AES-256-GCM).

Owns the key store's tables. Imports only the foundations (errors, secrets, sqlite, durable).
"""
