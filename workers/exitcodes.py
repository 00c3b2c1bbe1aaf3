"""Worker -> supervisor protocol: what an exit code asks the supervisor to do."""

OK = 0  # all owned days COMPLETE
CRASH = 1  # a bug or an unexpected failure: restart with backoff, within the restart budget
CONFIG = 2  # settings cannot work: halt the fleet with one message, do not restart
UNREACHABLE = 3  # no RPC endpoint answers: restart with backoff
WRONG_CHAIN = 4  # endpoint serves another chain than the database records: halt the fleet
STORE = 5  # ClickHouse unavailable: restart with backoff
LEASE = 7  # the shard is held by another live worker, or this one's lease lapsed: start again later

HALT_FLEET = {CONFIG, WRONG_CHAIN}
