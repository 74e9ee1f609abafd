-- One job in, one commit: the cheapest enqueue the jobs table allows.
INSERT INTO pgqueue.jobs (id, task_name, args) VALUES (gen_random_uuid(), 'bench.noop', '[1]');
