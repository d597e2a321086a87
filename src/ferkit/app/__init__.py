"""The Streamlit web app: photos, videos and the webcam through the Recognizer, in the browser.

It holds no recognition logic: every tab calls ``ferkit.infer``. ``ferkit app`` runs ``streamlit run`` on
``main.py`` through ``launch``; streamlit and streamlit-webrtc come with ``pip install 'ferkit[app]'``.
"""

from ferkit.app.launch import APP_FILE, launch

__all__ = ["APP_FILE", "launch"]
