# Global Sieve script, run for every delivery before the user's own (Dovecot Pigeonhole).
# Files into Junk what DMARC says to quarantine, and what the mailbox's own Bayesian filter
# (bogofilter, trained by moving mail into and out of Junk) calls spam.
require ["fileinto", "mailbox", "regex", "variables", "vnd.dovecot.execute"];

# OpenDMARC's verdict, with our authserv-id (any such header from outside was removed by Postfix):
# "dmarc=fail (p=quarantine ...)": the sender's domain asks receivers to treat it as suspicious.
if header :regex "Authentication-Results"
    "^[[:space:]]*{{ sieve_authserv_id_regex }}[[:space:]]*;.*dmarc=fail[[:space:]]*\\([^)]*p=quarantine" {
  fileinto :create "Junk";
  stop;
}

# The mailbox's word list judges the message: "S" is spam; "H" ham and "U" unsure stay.
if size :under 1M {
  if execute :pipe :output "bogosity" "bogofilter-classify" {
    if string :matches "${bogosity}" "S *" {
      fileinto :create "Junk";
      stop;
    }
  }
}
