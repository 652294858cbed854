"""Names shared by the learner side and the (Lightning-free) runner side."""

DEFAULT_POLICY_ID = "default_policy"
