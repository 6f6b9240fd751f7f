"""Django settings of the dashboard, all read from the environment (see dashboard/README.md).

The dashboard only reads: DATABASES['default'] is the read-only reader role from
``lakehouse.stack.reader_url``. No Django app that needs tables of its own (auth, sessions,
admin, contenttypes) is installed, so no migration ever runs and the read-only role suffices.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from lakehouse.settings import ConfigError, _float, get_settings
from lakehouse.stack import reader_url

BASE_DIR = Path(__file__).resolve().parent
_LAKEHOUSE = get_settings()


def _secret_key(home: Path) -> str:
    """DJANGO_SECRET_KEY, else one generated once into $LAKEHOUSE_HOME/django-secret-key (mode 0600)."""
    key = os.environ.get("DJANGO_SECRET_KEY")
    if key:
        return key
    path = home / "django-secret-key"
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if key:
            return key
        raise ConfigError(f"{path} is empty: delete it to have a new key generated, or set DJANGO_SECRET_KEY") from None
    except OSError as e:
        raise ConfigError(f"cannot write {path} ({e.strerror}): set DJANGO_SECRET_KEY or LAKEHOUSE_HOME") from None
    key = secrets.token_urlsafe(50)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def database_from_url(url: str) -> dict:
    """A Django DATABASES entry from a postgresql:// URL (query parameters become connection options)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError(f"the dashboard needs a postgresql:// database URL, got scheme {parts.scheme!r}")
    options = dict(parse_qsl(parts.query))
    options.setdefault("connect_timeout", "5")
    # A slow query must not hold a worker: the reader gives up after 10 s.
    options.setdefault("options", "-c statement_timeout=10000")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": options,
        # Kept by each of waitress' fixed worker threads: opening one costs ~14 ms a request.
        # The health check replaces a connection that died (PostgreSQL restarted) before use.
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
SECRET_KEY = _secret_key(_LAKEHOUSE.home)
ALLOWED_HOSTS = [h.strip() for h in (os.environ.get("DJANGO_ALLOWED_HOSTS") or "localhost,127.0.0.1").split(",")
                 if h.strip()]

INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "dashboard.security.SecurityHeadersMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
}]

DATABASES = {"default": database_from_url(reader_url(_LAKEHOUSE))}

# JSON answers of the serving-table API are kept this long per path + query (views.cached);
# 0 turns it off. The pipeline refreshes those tables every few seconds, so a second of
# staleness is not seen, while 50 polling clients cost one query per URL per second.
DASHBOARD_CACHE_SECONDS = _float("DASHBOARD_CACHE_SECONDS", 1.0)
if not 0 <= DASHBOARD_CACHE_SECONDS <= 3600:
    raise ConfigError(f"DASHBOARD_CACHE_SECONDS={DASHBOARD_CACHE_SECONDS:g} must be between 0 and 3600")
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "dashboard"}}

# Security headers: nosniff, a strict referrer policy, no framing, and the
# Content-Security-Policy of dashboard.security (only 'self').
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Strict"
# No sessions app: nothing is stored per user. Should sessions be needed, use signed cookies
# (django.contrib.sessions.backends.signed_cookies), which need no table.
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# Static files are served by Django itself (dashboard/urls.py), also with DEBUG off: a
# local tool, no separate web server. dashboard/static/vendor/ is filled by scripts/setup.sh.
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django": {"handlers": ["console"], "level": "WARNING"},
        "waitress": {"handlers": ["console"], "level": "WARNING"},
        "waitress.queue": {"level": "ERROR"},  # "Task queue depth is N" at every burst of polling
        "dashboard": {"handlers": ["console"], "level": "INFO"},
    },
}
