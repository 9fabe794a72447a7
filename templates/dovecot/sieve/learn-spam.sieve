# IMAPSieve: a message moved or copied into Junk is learnt as spam by the mailbox's bogofilter.
# The $BogoSpam/$BogoHam keywords remember what it was learnt as, so moving it back undoes that.
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "imap4flags"];
if hasflag "$BogoSpam" { stop; }
if hasflag "$BogoHam" {
  pipe :copy "bogofilter-train" ["spam", "undo"];
  removeflag "$BogoHam";
} else {
  pipe :copy "bogofilter-train" ["spam"];
}
addflag "$BogoSpam";
