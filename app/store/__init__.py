"""The encrypted local cache: SQLCipher index, AES-GCM instance blobs, and the vault API."""
