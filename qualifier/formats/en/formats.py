"""English formats for the site: "Dec 7, 2026, 14:05:09" everywhere, 24-hour clock."""

DATE_FORMAT = "M j, Y"
TIME_FORMAT = "H:i:s"
DATETIME_FORMAT = "M j, Y, H:i:s"
SHORT_DATE_FORMAT = DATE_FORMAT
SHORT_DATETIME_FORMAT = DATETIME_FORMAT
