"""Retention in the bucket: the policy, a pure plan with a reason per object, and guarded enforcement."""
