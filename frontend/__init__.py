"""The Streamlit frontend of the image classifier: ``python -m frontend`` serves the page.

The modules other than ``frontend.app`` never import Streamlit: ``config`` (environment variables),
``discovery`` (finding the backend on Cloud Run, and finding it again when it moves), ``auth`` (identity
tokens), ``backend_client`` (HTTP; its private ``_transport`` sends a request within one deadline and reads
its answer up to a size cap), ``presentation`` (text and charts) and ``previews`` (upload previews, made in
worker processes).
"""
