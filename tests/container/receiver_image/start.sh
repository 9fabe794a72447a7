#!/bin/sh
# RELAY_PASSWORD: the password of relay@example.net for SMTP AUTH (the relay tests).
set -e
printf 'relay@example.net:{PLAIN}%s\n' "${RELAY_PASSWORD:-relay-secret}" > /etc/dovecot/relay-users
chmod 0640 /etc/dovecot/relay-users && chown root:dovecot /etc/dovecot/relay-users
# OpenDKIM resolves with libunbound, which ignores resolv.conf unless told: use Docker's resolver
# (it forwards to the test DNS given with --dns).
nameserver=$(awk '/^nameserver/ { print $2; exit }' /etc/resolv.conf)
sed -i '/^Nameservers/d' /etc/opendkim.conf
echo "Nameservers         $nameserver" >> /etc/opendkim.conf
mkdir -p /run/opendmarc /run/opendkim /var/spool/postfix/private
chown opendmarc /run/opendmarc && chown opendkim /run/opendkim
chown postfix /var/spool/postfix/private && chmod 0700 /var/spool/postfix/private
# The milters log through syslog: busybox's syslogd puts it beside Postfix's log (docker logs).
busybox syslogd -n -O /dev/stdout &
opendkim -x /etc/opendkim.conf &
opendmarc -c /etc/opendmarc.conf &
# A restart (the tests' way to empty every cache) leaves the pid files of the last run behind.
rm -f /run/dovecot/master.pid /run/opendkim/*.pid /run/opendmarc/*.pid \
      /var/spool/postfix/private/auth /var/lib/dovecot/instances.lock
dovecot -F &
# smtpd gives up on AUTH for good if Dovecot isn't listening yet: start Postfix after it.
while [ ! -S /var/spool/postfix/private/auth ]; do sleep 0.1; done
exec postfix start-fg
