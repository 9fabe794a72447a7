"""The ground floor: what every other package builds on. Imports only the standard library.

- `errors`: every error the user can meet, each with its exit code;
- `paths`: every location below DATA_DIR and the config root, re-rootable for tests;
- `files`: atomic writes (temp file + `os.replace`), explicit modes; keys created once;
- `formats`: the one time format for people and the one for programs, the one size format;
- `logs`: the one logging set-up every process uses;
- `programs`: running programs with argv lists, a fixed environment and stderr in the error;
- `users`: the image's system users; `sockets`: listening sockets and the SMTP port;
- `taskstate`: what a worker task remembers between two runs, as JSON values;
- `maillog`: Postfix's log lines counted (delivered, deferred, bounced, refused) for the metrics.
"""
