"""MFA enrollment: Verify SMS for mobiles, TOTP for VoIP numbers (with a QR provisioning URI).

SMS codes to VoIP numbers are a known account-takeover path, so the default MFA policy routes
them to TOTP. Runs offline against the sandbox; its Verify code is 123456.
"""

from __future__ import annotations

from gatekeeper import Action, Gatekeeper
from gatekeeper.channels import totp
from gatekeeper.sandbox import SandboxServer

VERIFY_SERVICE = "VA" + "0" * 32


def enroll(gate: Gatekeeper, phone: str, user: str) -> None:
    outcome = gate.start_verification(phone, verify_service_sid=VERIFY_SERVICE)
    print(f"{user}: {outcome.action.value} ({', '.join(outcome.decision.reasons) or 'mobile'})")
    if outcome.action is Action.TOTP:
        secret = totp.new_secret()  # store it with the user, encrypted; Gatekeeper never keeps it
        uri = totp.provisioning_uri(secret, name=user, issuer="Gatekeeper Example")
        print("  scan this as a QR code:", uri.split("secret=")[0] + "secret=…")
        code = totp.now(secret)  # what the user's authenticator app shows
        print("  the app's code verifies:", totp.verify(secret, code))
    elif outcome.action in (Action.VERIFY_SMS, Action.VERIFY_CALL):
        check = gate.client.verify.v2.services(VERIFY_SERVICE).verification_checks.create(
            to=outcome.decision.to, code="123456"
        )
        print("  code checked:", check.status)


def main() -> None:
    with SandboxServer() as sandbox:
        gate = Gatekeeper(sandbox.client())
        enroll(gate, "+14155550100", "alex@example.com")  # mobile: Verify SMS
        enroll(gate, "+14155550102", "sam@example.com")  # nonFixedVoip: TOTP instead


if __name__ == "__main__":
    main()
