"""The public's feedback (issue 12), the parts without Kafka: personal data removed from the text, the per-device limit
by a salted hash whose salt rotates every UTC day, receipt codes, the settings.

Personal data is removed BEFORE the event is produced (``scrub``): e-mail addresses, phone numbers (German, Danish and
international forms) and the name after "ich bin", "ich heiße", "mein Name ist", "my name is", "I am"/"I'm",
"jeg hedder", "mit navn er", "jeg er". After "ich bin", "I am" and "jeg er" only capitalised words that are not common
nouns for a role ("Anwohnerin", "Student", ...) count as a name: "ich bin froh" stays, "ich bin Jens Petersen" does not.

No address of the sender is kept: the device is known only as a keyed hash of address and browser, the key lives in
this process's memory and is replaced at 00:00 UTC, so yesterday's hashes cannot be linked to today's."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FeedbackSettings(BaseSettings):
    """``PLIETSCH_FEEDBACK_*``: the publication delay after an approval, the submissions a device may make per hour,
    and the public address the kiosk's QR code points to (empty: the address the kiosk itself was loaded from)."""

    model_config = SettingsConfigDict(env_prefix="PLIETSCH_FEEDBACK_", extra="ignore")

    delay_s: float = Field(default=3600.0, ge=0)
    per_device_hour: int = Field(default=20, ge=1)
    public_url: str = ""
    max_text: int = Field(default=1000, ge=10, le=1000)


_DOT = r"\s*(?:\.|\(dot\)|\[dot\])\s*"
EMAIL = re.compile(r"[\w.+-]+\s*(?:@|\(at\)|\[at\]|\s+at\s+)\s*[\w-]+(?:" + _DOT + r"[\w-]+)*" + _DOT + r"[A-Za-z]{2,}",
                   re.IGNORECASE)
# +49 431 123456, 0049 (0)431-12 34 56, 0431/123456, 0171 1234567, +45 12 34 56 78, 12 34 56 78 (Danish, 8 digits)
PHONE = re.compile(r"(?<![\w+])(?:(?:\+|00)\d{1,3}[\s./-]*(?:\(0\)[\s./-]*)?\d(?:[\s./()-]*\d){5,13}"
                   r"|0\d{2,5}[\s/()-]*\d(?:[\s/-]*\d){3,10}"
                   r"|\d{2}\s\d{2}\s\d{2}\s\d{2})(?!\w)")
_WORD = r"[A-ZÄÖÜÅÆØ][\wäöüßåæø'-]+"
_NAME_AFTER = re.compile(r"(?i:\b(?:mein\s+name\s+ist|ich\s+heiße|ich\s+heisse|my\s+name\s+is|jeg\s+hedder|mit\s+navn\s+er|"
                         r"name:|navn:))\s+(?:(?i:der|die|den)\s+)?(?P<name>[\w'-]+(?:\s+" + _WORD + r"){0,2})")
_NAME_IF_CAPITAL = re.compile(r"(?i:\b(?:ich\s+bin|i\s+am|i'm|jeg\s+er))\s+(?:(?i:der|die|the)\s+)?"
                              r"(?P<name>" + _WORD + r"(?:\s+" + _WORD + r"){0,2})")
# Words that follow "ich bin"/"I am" without being a name (German nouns are capitalised).
_NOT_NAMES = (
    "Anwohner Anwohnerin Anwohnende Bürger Bürgerin Student Studentin Schüler Schülerin Rentner Rentnerin Mutter Vater "
    "Radfahrer Radfahrerin Fußgänger Fußgängerin Autofahrer Autofahrerin Pendler Pendlerin Tourist Touristin Gast "
    "Besucher Besucherin Mitglied Teil Kieler Kielerin Fan Lehrer Lehrerin Eltern Kind Nachbar Nachbarin "
    "Resident Student Parent Cyclist Commuter Visitor Tourist Local Neighbour Kiel Dane Danish German English "
    "Beboer Studerende Cyklist Turist Besøgende Dansker Nabo Hier Heute Seit Oft Neu Nicht Sehr Auch Immer Jeden "
    "Not Very Also Here Always New Often From Ikke Meget Også Her Altid Ny")
NOT_NAMES = {w.lower() for w in _NOT_NAMES.split()}
EMAIL_MARK, PHONE_MARK, NAME_MARK = "[E-Mail entfernt]", "[Telefonnummer entfernt]", "[Name entfernt]"


def scrub(text: str) -> tuple[str, int]:
    """The text without e-mail addresses, phone numbers and names after the patterns above, and how many went."""
    count = 0

    def sub(pattern: re.Pattern[str], mark: str, s: str) -> str:
        nonlocal count
        s, n = pattern.subn(mark, s)
        count += n
        return s

    def names(pattern: re.Pattern[str], s: str, check: bool) -> str:
        nonlocal count

        def repl(m: re.Match[str]) -> str:
            nonlocal count
            words = m["name"].split()
            if check:
                keep = []
                for w in words:  # "ich bin Anwohnerin in Gaarden": the first word that is no name ends the name
                    if w.lower().strip("'-") in NOT_NAMES:
                        break
                    keep.append(w)
                if not keep:
                    return m.group(0)
                words = keep
            elif words and words[0].lower() in NOT_NAMES:
                return m.group(0)
            count += 1
            name = " ".join(words)
            start = m.start("name") - m.start(0)
            whole = m.group(0)
            return whole[:start] + NAME_MARK + whole[start + len(name):]

        return pattern.sub(repl, s)

    text = sub(EMAIL, EMAIL_MARK, text)
    text = sub(PHONE, PHONE_MARK, text)
    text = names(_NAME_AFTER, text, check=False)
    text = names(_NAME_IF_CAPITAL, text, check=True)
    return text, count


# Receipt codes: 8 characters of Crockford's base32 (no I, L, O, U: nothing to mistake when read from a screen),
# shown as XXXX-XXXX; 40 bits, so codes cannot be guessed in useful numbers under the per-device limit.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(8))


def normalise_code(raw: str) -> str | None:
    """A code as typed ("k7q3-m9xp", "K7Q3 M9XP", "k7q3m9xp"): upper case, without separators; None when it cannot be one."""
    code = re.sub(r"[\s-]", "", raw).upper().replace("O", "0").replace("I", "1").replace("L", "1")
    return code if len(code) == 8 and all(c in ALPHABET for c in code) else None


def show_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


@dataclass
class _Day:
    day: str
    salt: bytes


class DeviceLimit:
    """At most *per_hour* submissions per device in any hour. A device is a keyed hash (BLAKE2b) of what the request
    tells about it (address and browser); the key is random, in memory only, and replaced at each new UTC day, when all
    counts are dropped with it. Memory is bounded by *devices*."""

    def __init__(self, per_hour: int, devices: int = 50_000) -> None:
        self.per_hour, self.devices = per_hour, devices
        self._day = _Day("", b"")
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def device(self, *parts: str, now: datetime | None = None) -> str:
        day = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
        with self._lock:
            if day != self._day.day:  # a new day: a new salt, and nothing of yesterday's hashes is kept
                self._day = _Day(day, secrets.token_bytes(32))
                self._seen.clear()
            salt = self._day.salt
        return hashlib.blake2b("\x1f".join(parts).encode(), key=salt, digest_size=12).hexdigest()

    def take(self, device: str, now: float | None = None) -> int | None:
        """Counts one submission; None when allowed, else the seconds until the device may send again."""
        t = time.monotonic() if now is None else now
        with self._lock:
            q = self._seen.setdefault(device, deque())
            while q and q[0] <= t - 3600:
                q.popleft()
            if len(q) >= self.per_hour:
                return int(q[0] + 3600 - t) + 1
            q.append(t)
            if len(self._seen) > self.devices:  # bounded: the oldest device's counts go first
                self._seen.pop(next(iter(self._seen)))
            return None
