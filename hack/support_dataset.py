"""Write the support-triage example's labelled dataset (examples/support-triage/).

`python hack/support_dataset.py` rewrites dataset.jsonl and the ConfigMap that carries it.
Each email is built from its own situation (what happened, to what, where) plus an opening
and a closing drawn from varied pools, so no two emails say the same thing: every text is
distinct after lower-casing, collapsing whitespace and removing digits (checked here and in
tests/unit/test_example_dataset.py). The generator is seeded: the files are reproducible.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1] / "examples" / "support-triage"
PER_LABEL = 80  # 5 labels: 400 items
LABELS = ("billing", "bug", "account", "feature-request", "other")

OPENERS = (
    "",
    "Hi team,",
    "Hello,",
    "Good morning,",
    "Hey there,",
    "Dear support,",
    "Quick question:",
    "Sorry to bother you again.",
    "Hi, hoping you can help.",
    "Hello from the finance office.",
    "Hi all,",
    "Urgent:",
)
CLOSERS = (
    "",
    "Thanks.",
    "Thanks in advance!",
    "Cheers.",
    "Please get back to me soon.",
    "Regards, Priya",
    "Best, Tom",
    "Kind regards, Omar",
    "Thank you for your time.",
    "Appreciate the help.",
    "Let me know what you need from me.",
    "Talk soon, Lena",
)

# Per label: situations with slots; each slot's words are what make two emails differ.
SITUATIONS: dict[str, list[tuple[str, dict[str, tuple[str, ...]]]]] = {
    "billing": [
        (
            "We were charged twice for the {plan} plan this month.",
            {"plan": ("Team", "Business", "Starter", "Enterprise", "Pro", "Growth", "Nonprofit")},
        ),
        (
            "Our invoice lists {seats} seats but we only use a handful.",
            {
                "seats": (
                    "extra",
                    "unused",
                    "duplicate",
                    "phantom",
                    "inactive",
                    "guest",
                    "former staff",
                )
            },
        ),
        (
            "Can you refund the {item} we cancelled last week?",
            {
                "item": (
                    "add-on",
                    "annual upgrade",
                    "storage pack",
                    "support package",
                    "backup plan",
                    "SMS bundle",
                    "training credits",
                )
            },
        ),
        (
            "The card ending in {card} was declined although it has funds.",
            {
                "card": (
                    "visa",
                    "mastercard",
                    "amex",
                    "the company card",
                    "debit card",
                    "corporate card",
                    "prepaid card",
                )
            },
        ),
        (
            "Please send a copy of the {doc} for our accountant.",
            {
                "doc": (
                    "last receipt",
                    "March invoice",
                    "VAT invoice",
                    "credit note",
                    "February invoice",
                    "pro forma invoice",
                    "annual statement",
                )
            },
        ),
        (
            "Why did the price go up without any notice in {month}?",
            {
                "month": (
                    "January",
                    "spring",
                    "the last cycle",
                    "our renewal",
                    "the middle of the term",
                    "April",
                    "the quarter",
                )
            },
        ),
        (
            "Our purchase order number is missing from the {doc}.",
            {
                "doc": (
                    "invoice PDF",
                    "billing email",
                    "quarterly statement",
                    "receipt",
                    "renewal notice",
                    "order confirmation",
                    "payment reminder",
                )
            },
        ),
        (
            "We switched to yearly billing but still get {kind} charges.",
            {
                "kind": (
                    "monthly",
                    "weekly",
                    "prorated",
                    "overage",
                    "daily",
                    "duplicate",
                    "late fee",
                )
            },
        ),
        (
            "The tax on our bill is wrong for a company based in {country}.",
            {"country": ("Germany", "Ireland", "Canada", "Japan", "Brazil", "India", "Australia")},
        ),
        (
            "How do I change the billing address to our {office} office?",
            {"office": ("Berlin", "Austin", "Lisbon", "Singapore", "Toronto", "Dublin", "Nairobi")},
        ),
        (
            "A {kind} discount we agreed on never showed up on the bill.",
            {
                "kind": (
                    "nonprofit",
                    "education",
                    "startup",
                    "volume",
                    "loyalty",
                    "partner",
                    "multi-year",
                )
            },
        ),
        (
            "We downgraded to the free tier but the {thing} is still billed.",
            {
                "thing": (
                    "seat fee",
                    "storage",
                    "premium support",
                    "API usage",
                    "second workspace",
                    "archived project",
                    "old domain",
                )
            },
        ),
        (
            "Can we pay by {method} instead of card?",
            {
                "method": (
                    "invoice",
                    "wire transfer",
                    "direct debit",
                    "purchase order",
                    "PayPal",
                    "cheque",
                    "SEPA transfer",
                )
            },
        ),
    ],
    "bug": [
        (
            "The {page} page stays blank after I log in on {platform}.",
            {
                "page": ("reports", "settings", "projects", "inbox", "billing"),
                "platform": ("Firefox", "Safari", "Edge", "Chrome", "Opera"),
            },
        ),
        (
            "Exporting to {fmt} fails with an unknown error.",
            {"fmt": ("CSV", "PDF", "Excel", "JSON", "XML", "Markdown", "PNG")},
        ),
        (
            "The mobile app crashes when I open {what}.",
            {
                "what": (
                    "a shared folder",
                    "the calendar",
                    "notifications",
                    "my profile",
                    "a voice note",
                    "the scanner",
                    "a large spreadsheet",
                )
            },
        ),
        (
            "Search returns nothing for {query} since the last update.",
            {
                "query": (
                    "customer names",
                    "tags",
                    "archived items",
                    "file names",
                    "emoji",
                    "quoted phrases",
                    "accented letters",
                )
            },
        ),
        (
            "Notifications arrive twice on {platform}.",
            {"platform": ("Android", "iOS", "Windows", "macOS", "Linux", "ChromeOS", "iPadOS")},
        ),
        (
            "The dashboard shows {stale} numbers instead of today's.",
            {
                "stale": (
                    "yesterday's",
                    "last week's",
                    "zeroed",
                    "negative",
                    "doubled",
                    "blank",
                    "rounded",
                )
            },
        ),
        (
            "Uploading an image larger than a few megabytes gives a {code} error.",
            {
                "code": (
                    "server",
                    "timeout",
                    "permission",
                    "network",
                    "quota",
                    "checksum",
                    "encoding",
                )
            },
        ),
        (
            "Dark mode makes the {element} unreadable.",
            {
                "element": (
                    "buttons",
                    "charts",
                    "sidebar",
                    "tooltips",
                    "icons",
                    "date picker",
                    "code blocks",
                )
            },
        ),
        (
            "The {integration} integration stopped syncing overnight.",
            {
                "integration": (
                    "Slack",
                    "Salesforce",
                    "Google Drive",
                    "Jira",
                    "HubSpot",
                    "Dropbox",
                    "GitLab",
                )
            },
        ),
        (
            "Dates in the timeline are shifted by one day in {zone}.",
            {
                "zone": (
                    "Sydney",
                    "Honolulu",
                    "Auckland",
                    "Los Angeles",
                    "Kolkata",
                    "Reykjavik",
                    "Santiago",
                )
            },
        ),
        (
            "Clicking save on a {form} does nothing at all.",
            {
                "form": (
                    "new task",
                    "contact form",
                    "template",
                    "comment",
                    "recurring event",
                    "invoice draft",
                    "survey",
                )
            },
        ),
        (
            "The {widget} spins forever and never loads.",
            {
                "widget": (
                    "activity feed",
                    "file preview",
                    "map view",
                    "chart editor",
                    "comment thread",
                    "audit trail",
                    "kanban board",
                )
            },
        ),
    ],
    "account": [
        (
            "Please add {name} as an admin to our workspace.",
            {"name": ("Tom", "Mei", "Rafael", "Ingrid", "Sven", "Chiara", "Kwame")},
        ),
        (
            "I can't reset my password: the {step} never arrives.",
            {
                "step": (
                    "reset email",
                    "verification code",
                    "confirmation link",
                    "SMS",
                    "magic link",
                    "one-time code",
                    "unlock email",
                )
            },
        ),
        (
            "How do I turn off two-factor login for {who}?",
            {
                "who": (
                    "a departed employee",
                    "our shared account",
                    "my old phone",
                    "a test user",
                    "a contractor",
                    "the intern account",
                    "my tablet",
                )
            },
        ),
        (
            "Please delete my account and all of my {data}.",
            {
                "data": (
                    "data",
                    "files",
                    "personal details",
                    "history",
                    "messages",
                    "uploads",
                    "contacts",
                )
            },
        ),
        (
            "Change the email on my account to {addr}.",
            {
                "addr": (
                    "my work address",
                    "my new domain",
                    "my personal address",
                    "the team alias",
                    "a shared mailbox",
                    "my old university address",
                    "the billing alias",
                )
            },
        ),
        (
            "My account got locked after {why}.",
            {
                "why": (
                    "too many attempts",
                    "a trip abroad",
                    "a password change",
                    "a browser update",
                    "an expired card",
                    "a security alert",
                    "a name change",
                )
            },
        ),
        (
            "Can you merge my {a} login with my {b} login?",
            {"a": ("Google", "GitHub", "Apple"), "b": ("email", "Microsoft", "Slack")},
        ),
        (
            "Transfer ownership of the workspace from {old} to me.",
            {
                "old": (
                    "our former CTO",
                    "a contractor",
                    "my manager",
                    "the founder",
                    "an agency",
                    "the previous admin",
                    "a colleague on leave",
                )
            },
        ),
        (
            "Remove {name} from our organisation, they left the company.",
            {"name": ("Jonas", "Aisha", "Pedro", "Yuki", "Lucia", "Tariq", "Hana")},
        ),
        (
            "I need to rename our workspace to {new}.",
            {
                "new": (
                    "the new brand",
                    "the parent company",
                    "something shorter",
                    "our legal name",
                    "the client's name",
                    "a neutral name",
                    "the new team name",
                )
            },
        ),
        (
            "Single sign-on with {idp} rejects every user since this morning's change.",
            {
                "idp": (
                    "Okta",
                    "Azure AD",
                    "OneLogin",
                    "Keycloak",
                    "Google Workspace",
                    "Ping",
                    "JumpCloud",
                )
            },
        ),
        (
            "Which role lets {who} see invoices without editing projects?",
            {
                "who": (
                    "our accountant",
                    "an auditor",
                    "a board member",
                    "the office manager",
                    "a freelancer",
                    "the legal team",
                    "an intern",
                )
            },
        ),
    ],
    "feature-request": [
        (
            "Could you add a {thing} to the reports?",
            {
                "thing": (
                    "weekly schedule",
                    "pivot table",
                    "custom logo",
                    "trend line",
                    "burndown chart",
                    "cohort table",
                    "heat map",
                )
            },
        ),
        (
            "It would be great to export straight to {target}.",
            {
                "target": (
                    "Google Sheets",
                    "Notion",
                    "Airtable",
                    "PowerPoint",
                    "Trello",
                    "Confluence",
                    "Tableau",
                )
            },
        ),
        (
            "Please support {lang} in the interface.",
            {
                "lang": (
                    "Portuguese",
                    "Korean",
                    "Polish",
                    "Turkish",
                    "Vietnamese",
                    "Hebrew",
                    "Swahili",
                )
            },
        ),
        (
            "We'd love an API endpoint for {what}.",
            {
                "what": (
                    "bulk edits",
                    "audit logs",
                    "comments",
                    "time entries",
                    "webhooks",
                    "user provisioning",
                    "invoices",
                )
            },
        ),
        (
            "Any plans for a {kind} view of tasks?",
            {"kind": ("Gantt", "kanban", "calendar", "timeline", "mind map", "table", "workload")},
        ),
        (
            "Can dashboards be shared with {who} who have no account?",
            {
                "who": (
                    "clients",
                    "investors",
                    "partners",
                    "the public",
                    "contractors",
                    "auditors",
                    "students",
                )
            },
        ),
        (
            "Let us set {what} per project instead of per workspace.",
            {
                "what": (
                    "permissions",
                    "colours",
                    "reminders",
                    "templates",
                    "due date rules",
                    "notification sounds",
                    "default views",
                )
            },
        ),
        (
            "A keyboard shortcut for {action} would save us hours.",
            {
                "action": (
                    "archiving",
                    "duplicating",
                    "assigning",
                    "tagging",
                    "moving",
                    "printing",
                    "starring",
                )
            },
        ),
        (
            "Could the mobile app work {mode}?",
            {
                "mode": (
                    "offline",
                    "on tablets in landscape",
                    "with a stylus",
                    "on watches",
                    "on Linux desktops",
                    "in low bandwidth",
                    "with screen readers",
                )
            },
        ),
        (
            "We need reminders by {channel} before deadlines.",
            {
                "channel": (
                    "SMS",
                    "Slack",
                    "Teams",
                    "WhatsApp",
                    "email digest",
                    "Signal",
                    "push notification",
                )
            },
        ),
        (
            "Please allow attachments bigger than the current limit for {use}.",
            {
                "use": (
                    "video files",
                    "CAD drawings",
                    "raw photos",
                    "database dumps",
                    "audio recordings",
                    "scanned contracts",
                    "3D models",
                )
            },
        ),
        (
            "Would you consider a {kind} mode for presentations?",
            {
                "kind": (
                    "read-only",
                    "full-screen",
                    "high-contrast",
                    "kiosk",
                    "presenter",
                    "distraction-free",
                    "large-print",
                )
            },
        ),
    ],
    "other": [
        (
            "Do you have an office in {city}?",
            {"city": ("Osaka", "Nairobi", "Toronto", "Madrid", "Lagos", "Melbourne", "Warsaw")},
        ),
        (
            "Are you hiring {role} at the moment?",
            {
                "role": (
                    "designers",
                    "support staff",
                    "engineers",
                    "interns",
                    "sales staff",
                    "product managers",
                    "data analysts",
                )
            },
        ),
        (
            "Just wanted to say the {team} team was fantastic.",
            {
                "team": (
                    "onboarding",
                    "support",
                    "sales",
                    "training",
                    "billing",
                    "product",
                    "account management",
                )
            },
        ),
        (
            "We'd like to discuss a {kind} partnership.",
            {
                "kind": (
                    "reseller",
                    "co-marketing",
                    "technology",
                    "referral",
                    "integration",
                    "distribution",
                    "research",
                )
            },
        ),
        (
            "What are your opening hours during {period}?",
            {
                "period": (
                    "the holidays",
                    "Ramadan",
                    "summer",
                    "Golden Week",
                    "Easter",
                    "Diwali",
                    "the Lunar New Year",
                )
            },
        ),
        (
            "Can I interview someone from your company for {outlet}?",
            {
                "outlet": (
                    "a podcast",
                    "our newsletter",
                    "a university thesis",
                    "a trade magazine",
                    "a documentary",
                    "a radio show",
                    "a case study",
                )
            },
        ),
        (
            "Will you be at {event} this year?",
            {
                "event": (
                    "the Web Summit",
                    "SaaStr",
                    "the local meetup",
                    "CES",
                    "Dreamforce",
                    "a hackathon",
                    "the regional fair",
                )
            },
        ),
        (
            "Is there a {thing} we could send our staff to?",
            {
                "thing": (
                    "training day",
                    "user conference",
                    "webinar series",
                    "workshop",
                    "certification course",
                    "customer summit",
                    "lunch and learn",
                )
            },
        ),
        (
            "Who should I contact about {topic}?",
            {
                "topic": (
                    "press enquiries",
                    "a sponsorship",
                    "a security audit letter",
                    "speaking at an event",
                    "a job application",
                    "a lost parcel",
                    "a school visit",
                )
            },
        ),
        (
            "Do you offer {perk} for charities?",
            {
                "perk": (
                    "volunteer days",
                    "case studies",
                    "guest talks",
                    "donations",
                    "discounts",
                    "free seats",
                    "mentoring",
                )
            },
        ),
        (
            "Could you fill in our {form} questionnaire?",
            {
                "form": (
                    "supplier",
                    "sustainability",
                    "accessibility",
                    "vendor risk",
                    "data protection",
                    "ethics",
                    "insurance",
                )
            },
        ),
        (
            "Where can I find your {doc}?",
            {
                "doc": (
                    "press kit",
                    "brand guidelines",
                    "company history",
                    "office address",
                    "logo files",
                    "investor relations page",
                    "careers page",
                )
            },
        ),
    ],
}

# Context sentences, per label, that change the wording around the situation.
CONTEXTS: dict[str, tuple[str, ...]] = {
    "billing": (
        "It happened on our latest statement.",
        "Our finance team noticed it.",
        "This is the second time.",
        "We pay by bank transfer.",
        "",
    ),
    "bug": (
        "It worked fine until yesterday.",
        "Clearing the cache did not help.",
        "Several colleagues see it too.",
        "Screenshots are attached.",
        "",
    ),
    "account": (
        "I'm the workspace owner.",
        "This is blocking our onboarding.",
        "Our IT department asked me to write.",
        "I already tried the help centre.",
        "",
    ),
    "feature-request": (
        "Our competitors already have this.",
        "The whole team keeps asking for it.",
        "Happy to beta test it.",
        "It would make us upgrade.",
        "",
    ),
    "other": (
        "No rush at all.",
        "Not a support issue, really.",
        "A colleague suggested I ask here.",
        "I found your address online.",
        "",
    ),
}


def normalised(text: str) -> str:
    """The text as duplicate detection compares it: case, whitespace and numbers removed."""
    return " ".join(re.sub(r"\d+", "#", text.lower()).split())


def emails(label: str, rng: random.Random) -> list[str]:
    candidates: list[str] = []
    for template, slots in SITUATIONS[label]:
        names = sorted(slots)
        for values in itertools.product(*(slots[n] for n in names)):
            candidates.append(template.format(**dict(zip(names, values, strict=True))))
    rng.shuffle(candidates)
    out: list[str] = []
    for situation in candidates[:PER_LABEL]:
        parts = [rng.choice(OPENERS), situation, rng.choice(CONTEXTS[label]), rng.choice(CLOSERS)]
        out.append(" ".join(p for p in parts if p))
    if len(out) < PER_LABEL:
        raise SystemExit(f"{label}: only {len(out)} situations, {PER_LABEL} needed")
    return out


def build() -> list[dict[str, str]]:
    rng = random.Random(20261206)
    items = [{"input": text, "label": label} for label in LABELS for text in emails(label, rng)]
    rng.shuffle(items)
    seen: dict[str, str] = {}
    for item in items:
        key = normalised(item["input"])
        if key in seen:
            raise SystemExit(f"duplicate after normalising: {item['input']!r} / {seen[key]!r}")
        seen[key] = item["input"]
    return items


CONFIG_MAP_HEADER = """\
# The labelled dataset the triage route is evaluated on (the same lines as dataset.jsonl,
# which `tierwise eval --dataset` and the emulator read directly; a unit test keeps the two equal).
# One JSON object per line: {"input": the email text, "label": the correct category}.
# Written by hack/support_dataset.py: 400 distinct emails, 80 per label.
apiVersion: v1
kind: ConfigMap
metadata:
  name: triage-eval-dataset
data:
  dataset.jsonl: |
"""


def main() -> None:
    lines = [json.dumps(item) for item in build()]
    (FOLDER / "dataset.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    body = "".join(f"    {line}\n" for line in lines)
    (FOLDER / "dataset-configmap.yaml").write_text(CONFIG_MAP_HEADER + body, encoding="utf-8")
    print(f"wrote {len(lines)} items to {FOLDER}")


if __name__ == "__main__":
    main()
