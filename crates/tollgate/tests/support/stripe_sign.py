"""Stripe webhook signatures made and checked by Stripe's official Python library, for
Tollgate's tests (so Tollgate's verification is compared with Stripe's own code).

  python stripe_sign.py sign SECRET TIMESTAMP < payload     prints a Stripe-Signature header
  python stripe_sign.py verify SECRET HEADER < payload      prints `ok` or the library's error

`sign` builds the header the way stripe-python's own tests do (`t=<ts>,v1=<hmac>` with
`WebhookSignature._compute_signature`); `verify` is `stripe.Webhook.construct_event` with
Stripe's default tolerance (300 s).
"""

import sys

import stripe


def main():
    command, secret, arg = sys.argv[1:4]
    payload = sys.stdin.buffer.read().decode("utf-8")
    if command == "sign":
        ts = int(arg)
        sig = stripe.WebhookSignature._compute_signature(
            "%d.%s" % (ts, payload), secret)
        print("t=%d,v1=%s" % (ts, sig))
    elif command == "verify":
        try:
            event = stripe.Webhook.construct_event(payload, arg, secret)
            print("ok " + event["id"])
        except stripe.SignatureVerificationError as e:
            print("SignatureVerificationError: %s" % e)
    else:
        sys.exit("unknown command " + command)


if __name__ == "__main__":
    main()
