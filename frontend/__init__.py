"""The Streamlit frontend of the image classifier: ``python -m frontend`` serves the page.

The modules other than ``frontend.app`` never import Streamlit: ``config`` (environment variables),
``discovery`` (finding the backend on Cloud Run), ``auth`` (identity tokens), ``backend_client`` (HTTP),
``presentation`` (text and charts) and ``previews`` (upload previews, made in worker processes).
"""
