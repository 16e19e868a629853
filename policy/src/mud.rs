//! MUD import (RFC 8520).
