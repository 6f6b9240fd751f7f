"""Security headers beyond Django's own: Content-Security-Policy and Permissions-Policy.

The policy allows only 'self': every script, style, font and image comes from this server
(no CDN, no inline script: pages pass data to their scripts with ``json_script``). When a
Flexmonster licence key is set, the pivot page alone gets what Flexmonster needs on top:
inline styles (it adds ``<style>`` elements and ``style`` attributes at run time) and
``data:``/``blob:`` images and ``data:`` fonts (its icons and its image/PDF export). Scripts
stay 'self' only, on every page.
"""

from __future__ import annotations

from dashboard import report

BASE_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "worker-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}

FLEXMONSTER_EXTRA = {
    "style-src": ["'unsafe-inline'"],
    "img-src": ["data:", "blob:"],
    "font-src": ["data:"],
}


def content_security_policy(*, flexmonster: bool = False) -> str:
    policy = {k: list(v) for k, v in BASE_POLICY.items()}
    if flexmonster:
        for directive, sources in FLEXMONSTER_EXTRA.items():
            policy[directive] += sources
    return "; ".join(f"{k} {' '.join(v)}" for k, v in policy.items())


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        flexmonster = request.path == "/pivot/" and report.renderer() == "flexmonster"
        response.setdefault("Content-Security-Policy", content_security_policy(flexmonster=flexmonster))
        response.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
        response.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        return response
