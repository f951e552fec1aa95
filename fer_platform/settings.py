"""Django settings. Every value comes from the environment (django-environ), with safe defaults for the embedded
quick start (``make run``: SQLite, local Redis, DEBUG off unless ``DJANGO_DEBUG`` is set, served on localhost) and
hard failures for unsafe production values (no secret key, a known key). See README "Configuration"."""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY and DEBUG:
    SECRET_KEY = "insecure-debug-only-key-never-used-without-DJANGO_DEBUG"
if not SECRET_KEY or (not DEBUG and (SECRET_KEY.startswith(("insecure-", "change-me")) or len(SECRET_KEY) < 32)):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set to a long random value (at least 32 characters) when DJANGO_DEBUG is off; "
        "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(50))'. "
        "make run and make test set one for you."
    )
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS (README "Deployment"): behind the TLS proxy of docker compose or make run-https ---
#: The site is served over HTTPS by a reverse proxy that sets X-Forwarded-Proto: secure cookies, HSTS, redirects.
HTTPS = env.bool("DJANGO_HTTPS", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=HTTPS)
#: Health checks reach daphne directly over plain HTTP inside the deployment.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=HTTPS)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=HTTPS)
#: HSTS max-age in seconds: one year behind HTTPS (the value hstspreload.org asks for), off otherwise.
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", default=HTTPS)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "sessions_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "fer_platform.middleware.AnonymousBodyLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # last, as django-axes requires: turns a locked-out login into the lockout page
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "fer_platform.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # Template tags live beside the code that uses them (sessions_app/reports/), not in a templatetags package.
            "libraries": {"report_tags": "sessions_app.reports.templatetags"},
        },
    },
]
WSGI_APPLICATION = None
ASGI_APPLICATION = "fer_platform.asgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=0))
# A kept connection (the workers': DATABASE_CONN_MAX_AGE=60 in scripts/run.py and compose) is checked before it is
# reused, so a restarted database costs no failed task.
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web process and Celery worker write concurrently in the quick start: wait for locks instead of failing.
    # Write-ahead logging lets readers run beside the writer, and synchronous=NORMAL syncs the log at checkpoints
    # instead of every commit (still durable against a crash of the processes; SQLite docs, "WAL mode").
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
#: Events the channel layer keeps queued per web process (and per consumer) before it drops new ones; see below.
CHANNEL_LAYER_CAPACITY = 10_000
CHANNEL_LAYERS = {
    "default": {
        # channels_redis's layer, riding out Redis restarts (sessions_app/live/layer.py)
        "BACKEND": "sessions_app.live.layer.ResilientRedisChannelLayer",
        # capacity: channels_redis queues the events of all consumers of one web process under one Redis key and
        # silently drops a group message when that key holds `capacity` (default 100): a daphne process serving many
        # cameras that fell a second behind lost result events, which then came at the frames' deadline (20 s).
        "CONFIG": {
            "hosts": [env.str("CHANNEL_LAYER_URL", default=REDIS_URL)],
            "prefix": "fer:channels",
            "capacity": CHANNEL_LAYER_CAPACITY,
        },
    }
}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Celery's Django fixup closes every database connection before and after each task unless this is set, whatever
# CONN_MAX_AGE says; with it, Django's own rule applies around each task (close_old_connections, fer_platform/celery.py)
# and the fixup only recycles the connection every 2 x this many tasks.
CELERY_DB_REUSE_MAX = 1000
#: Celery beat: retention purge (issue #4) every FER_RETENTION_PURGE_INTERVAL_S seconds (default hourly).
CELERY_BEAT_SCHEDULE = {
    "purge-expired-sessions": {
        "task": "sessions_app.purge_expired_sessions",
        "schedule": env.float("FER_RETENTION_PURGE_INTERVAL_S", default=3600.0),
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses logins of a locked-out username+IP before any password is checked
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
#: Login throttling (django-axes) of the HTML form and the API token endpoint: after AXES_FAILURE_LIMIT wrong
#: passwords for one username from one client IP, that pair is locked out for AXES_COOLOFF_TIME hours (a school's
#: shared NAT address does not lock out its other teachers). The client IP is the proxy-aware one of the API
#: throttles (``API_NUM_PROXIES``).
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "sessions_app.throttling.client_ip"
AXES_LOCKOUT_CALLABLE = "sessions_app.throttling.login_lockout_response"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "sessions_app:session-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("DJANGO_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "sessions_app.api.pagination.ApiPagination",
    "EXCEPTION_HANDLER": "sessions_app.api.exceptions.api_exception_handler",
    "PAGE_SIZE": 50,
    # Client IP for throttling: X-Forwarded-For is trusted only through this many proxies (0: the socket address,
    # so a client cannot dodge the auth throttle by sending its own X-Forwarded-For). Set 1 behind one proxy.
    "NUM_PROXIES": env.int("API_NUM_PROXIES", default=0),
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_RATES": {
        "auth": env.str("API_THROTTLE_AUTH", default="10/min"),
        "export": env.str("API_THROTTLE_EXPORT", default="30/hour"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "FER platform API",
    "DESCRIPTION": "Sessions, per-frame and per-face emotion results, timelines and exports.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the installed drf-spectacular-sidecar package: no CDN (users sit behind firewalls).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"EmotionLabelEnum": "inference.labels.LABELS"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# --- Emotion analytics settings (README "Configuration") ---
#: Model file served by workers; empty = the default model shipped in inference/models/.
FER_MODEL_PATH = env.str("FER_MODEL_PATH", default="")
#: Model for faces whose box side is below FER_SMALL_FACE_SIDE px; empty = the shipped small-face model
#: (inference/models/fer_cnn_small.onnx, README "Small faces"). FER_SMALL_FACE_SIDE=0 sends every face to
#: FER_MODEL_PATH.
FER_SMALL_FACE_MODEL_PATH = env.str("FER_SMALL_FACE_MODEL_PATH", default="")
FER_SMALL_FACE_SIDE = env.int("FER_SMALL_FACE_SIDE", default=40)
#: Face detector of the workers: "auto" (default: BlazeFace, plus MTCNN on crowd frames with many small faces),
#: "blazeface", "mtcnn" (shipped ONNX networks) or "haar" (OpenCV cascade); see inference.detector.
FER_DETECTOR = env.str("FER_DETECTOR", default="auto")
#: Camera streams: run the full face detector at least every this many frames of a camera, and only follow the
#: faces already found in between (inference.stream). 1 = full detection of every frame. A newcomer between
#: keyframes is found at most N - 1 frames late (3.5 s at 2 fps with 8); a scene change or a lost face forces a
#: keyframe at once.
FER_STREAM_KEYFRAME_EVERY = env.int("FER_STREAM_KEYFRAME_EVERY", default=8)
#: Smallest face side (px) the keyframes of a classroom session's cameras look for; 0 = every face the detector can
#: find, as crowd sessions do. The default is the smallest face the platform reads (``inference.recognizer``'s
#: ``MIN_READABLE_SIDE``): a classroom camera's faces are 30-100 px, and not searching for faces that would only be
#: counted makes a 640x480 keyframe about twice as cheap (README "Face detection").
FER_CLASSROOM_MIN_FACE_PX = env.int("FER_CLASSROOM_MIN_FACE_PX", default=24)
if FER_CLASSROOM_MIN_FACE_PX < 0:
    raise ImproperlyConfigured("FER_CLASSROOM_MIN_FACE_PX must be 0 (off) or a face side in pixels")
#: Average each face with its mirror image (flip test-time augmentation): 69.0 % vs 67.8 % PublicTest accuracy.
FER_FLIP_TTA = env.bool("FER_FLIP_TTA", default=True)
#: With flip TTA, mirror only faces whose one-pass top-two margin is below this (inference.classifier); 1 = every
#: face. 0.4 keeps the shipped ensemble within the 1-ms-per-face budget (0.87 vs 1.14 ms measured, README
#: "Shipped model") at the same PublicTest accuracy (68.63 vs 68.68 %).
FER_TTA_MARGIN = env.float("FER_TTA_MARGIN", default=0.4)
#: Largest accepted frame message in bytes (JPEG/PNG).
FER_MAX_FRAME_BYTES = env.int("FER_MAX_FRAME_BYTES", default=1_000_000)
#: Largest accepted decoded frame, pixels.
FER_MAX_FRAME_WIDTH = env.int("FER_MAX_FRAME_WIDTH", default=1920)
FER_MAX_FRAME_HEIGHT = env.int("FER_MAX_FRAME_HEIGHT", default=1080)
#: Frames of one stream allowed in flight (queued or being analysed) before newer frames replace waiting ones.
FER_MAX_IN_FLIGHT = env.int("FER_MAX_IN_FLIGHT", default=2)
#: Live frames admitted to analysis and not yet answered, across all cameras and web processes (Redis): frames
#: beyond it wait at the edge in their stream's pending slot instead of queueing. About 2 per worker process keeps
#: every worker busy while a frame waits at most ~one analysis time in the queue.
FER_ANALYSIS_SLOTS = env.int("FER_ANALYSIS_SLOTS", default=4)
#: Seconds after arrival during which a waiting camera frame counts as fresh: when cameras wait for a slot, fresh
#: frames go first (``services.frames.frame_admission_acquire``), so the frames analysed under overload are young.
FER_ADMISSION_FRESH_S = env.float("FER_ADMISSION_FRESH_S", default=0.15)
#: Seconds after which a queued frame task is stale and expires unprocessed (counted as dropped).
FER_FRAME_TASK_EXPIRES_S = env.float("FER_FRAME_TASK_EXPIRES_S", default=10.0)
#: Aggregates are shown only when they describe at least this many faces.
FER_MIN_FACES_FOR_AGGREGATES = env.int("FER_MIN_FACES_FOR_AGGREGATES", default=3)
#: Days after which session results are purged (0 = keep forever).
FER_RETENTION_DAYS = env.int("FER_RETENTION_DAYS", default=90)
#: Largest upload (photo or video) in bytes.
FER_MAX_UPLOAD_BYTES = env.int("FER_MAX_UPLOAD_BYTES", default=50_000_000)
#: Most frames sampled from one uploaded video (sampled at the session's target fps).
FER_MAX_UPLOAD_FRAMES = env.int("FER_MAX_UPLOAD_FRAMES", default=600)
#: Request bodies above this many bytes are refused with 413 before they are read (``fer_platform.serve``); the
#: upload limit plus room for the multipart envelope.
FER_MAX_REQUEST_BYTES = env.int("FER_MAX_REQUEST_BYTES", default=FER_MAX_UPLOAD_BYTES + 1_000_000)
# Uploads up to 10 MB (every photo the frame limits allow) stay in memory; bigger bodies (videos) are spooled to a
# temporary file deleted at the end of the request, so memory stays bounded whatever the upload.
FILE_UPLOAD_MAX_MEMORY_SIZE = 10_000_000
#: Largest request body accepted from a client that is not logged in (the login form, token requests), checked
#: before anything reads it.
FER_MAX_ANONYMOUS_BODY_BYTES = env.int("FER_MAX_ANONYMOUS_BODY_BYTES", default=65_536)
#: Upload frames (photos count 1, videos their sampled frames) one user may queue per clock hour (0 = no quota).
FER_UPLOAD_FRAMES_PER_HOUR = env.int("FER_UPLOAD_FRAMES_PER_HOUR", default=3000)
#: Largest uploaded photo, pixels per side, read from the image header before decoding (decompression bombs).
FER_MAX_UPLOAD_IMAGE_SIDE = env.int("FER_MAX_UPLOAD_IMAGE_SIDE", default=8192)
#: Largest non-file request body Django parses in memory (forms, JSON); Django's default.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
#: Largest WebSocket message daphne accepts before dropping the socket: twice the frame limit plus the header, so a
#: moderately oversized frame is answered with a ``too_large`` error and only abuse closes the connection.
FER_WS_MAX_MESSAGE_BYTES = 2 * FER_MAX_FRAME_BYTES + 16
#: Celery queues of frame analysis: live camera frames and uploaded photos/videos. Workers consume both, live first:
#: the broker is polled in sorted queue order (``queue_order_strategy: sorted``), so the live queue's name must sort
#: before the upload queue's; an upload backlog then never delays a live frame by more than the frame in analysis.
FER_LIVE_QUEUE = env.str("FER_LIVE_QUEUE", default="fer.1.live")
FER_UPLOAD_QUEUE = env.str("FER_UPLOAD_QUEUE", default="fer.2.uploads")
if not FER_LIVE_QUEUE < FER_UPLOAD_QUEUE:
    raise ImproperlyConfigured("FER_LIVE_QUEUE must sort before FER_UPLOAD_QUEUE (live frames are served first)")
CELERY_BROKER_TRANSPORT_OPTIONS = {"queue_order_strategy": "sorted"}
#: What a worker started without -Q consumes: frames (live first) and the periodic maintenance tasks.
CELERY_TASK_QUEUES = [Queue(FER_LIVE_QUEUE), Queue(FER_UPLOAD_QUEUE), Queue("celery")]
#: Timeline bucket width of the live chart and dashboard, seconds.
FER_CHART_BUCKET_S = env.int("FER_CHART_BUCKET_S", default=5)

# --- Issue 12: housekeeping of sessions (README "Configuration") ---
#: A running session without a new frame for this many seconds is ended automatically (0 = never).
FER_SESSION_IDLE_END_S = env.int("FER_SESSION_IDLE_END_S", default=1800)
#: How often Celery beat looks for idle sessions, seconds.
FER_SESSION_IDLE_CHECK_S = env.float("FER_SESSION_IDLE_CHECK_S", default=60.0)
#: Sessions per page of the session list.
FER_SESSIONS_PER_PAGE = env.int("FER_SESSIONS_PER_PAGE", default=25)
CELERY_BEAT_SCHEDULE["end-idle-sessions"] = {
    "task": "sessions_app.end_idle_sessions",
    "schedule": FER_SESSION_IDLE_CHECK_S,
}
