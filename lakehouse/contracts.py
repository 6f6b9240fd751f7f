"""The wire formats of status events, declared once.

The simulator writes these messages and the silver layer parses them; both import the
names from here so a field is never spelled twice.
"""

from __future__ import annotations

# Status colour -> severity level. The original project packs both into one string,
# "Red|Severity 1"; v1 keeps them apart.
SEVERITY_BY_STATUS = {"Red": "Severity 1", "Orange": "Severity 2", "Green": "Severity 3"}
STATUS_COLORS = tuple(SEVERITY_BY_STATUS)
SEVERITY_LEVELS = tuple(SEVERITY_BY_STATUS.values())

# The 13 server types of the original project, in its spelling.
SERVER_TYPES = (
    "Application Servers",
    "Client Servers",
    "Collaboration Servers",
    "FTP Servers",
    "List Servers",
    "Mail Servers",
    "Open Source Servers",
    "Proxy Servers",
    "Real-Time Communication Servers",
    "Server Platforms",
    "Telnet Servers",
    "Virtual Servers",
    "Web Servers",
)

# --- v1: our format (the default) -------------------------------------------------
V1_SCHEMA_VERSION = 1
# field -> JSON type. event_time is ISO-8601 UTC with milliseconds: 2026-11-28T09:00:01.123Z
V1_FIELDS = {
    "schema_version": "integer",
    "event_id": "string",  # UUID, unique per event
    "server_id": "string",
    "event_time": "string",
    "server_type": "string",
    "country_code": "string",
    "country_name": "string",
    "city": "string",
    "status_color": "string",
    "severity_level": "string",
    "estimated_resolution_time": "integer",
}
V1_REQUIRED = tuple(V1_FIELDS)

# --- seed: the original project's message, kept byte-for-byte in shape -------------
SEED_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # local time, no zone
SEED_FIELDS = (
    "event_server_status_color_name_severity_level",
    "event_datetime",
    "event_server_type",
    "event_country_code",
    "event_country_name",
    "event_city_name",
    "event_estimated_issue_resolution_time",
    *(f"event_server_status_other_param_{i}" for i in range(1, 6)),
    *(f"event_server_config_other_param_{i}" for i in range(1, 6)),
    "event_id",
)
