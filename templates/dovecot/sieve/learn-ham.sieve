# IMAPSieve: a message moved out of Junk (anywhere but Trash) is learnt as ham.
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "imap4flags"];
if environment :is "imap.mailbox" ["Trash", "Junk"] { stop; }
if hasflag "$BogoHam" { stop; }
if hasflag "$BogoSpam" {
  pipe :copy "bogofilter-train" ["ham", "undo"];
  removeflag "$BogoSpam";
} else {
  pipe :copy "bogofilter-train" ["ham"];
}
addflag "$BogoHam";
