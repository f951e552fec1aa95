"""WebSocket routes: the owner's camera stream and the read-only live viewer of a session."""

from django.urls import path

from sessions_app.live import consumers

websocket_urlpatterns: list = [
    path("ws/sessions/<int:session_id>/stream/", consumers.SessionStreamConsumer.as_asgi()),
    path("ws/sessions/<int:session_id>/watch/", consumers.SessionViewerConsumer.as_asgi()),
]
