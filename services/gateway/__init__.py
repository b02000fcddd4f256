"""The REST gateway (FastAPI): jobs, items, datasets; auth by API key per tenant."""
