/*
 * A plain HTTP load generator: POSTs one body to one URL N times with C
 * concurrent keep-alive connections (libcurl multi), and prints the
 * requests per second, then its own CPU time per request in microseconds
 * and the share of a core it used. The reference the IP2SMS and Kannel
 * benchmarks compare the worker against: the same HTTP work, no database.
 * A BODY of "-" sends GETs of the URL instead (Kannel's sendsms takes its
 * parameters in the query string), with no credentials in a header. Any
 * 2xx answer counts as done (Kannel accepts with 202).
 *
 * usage: loadgen URL BODY|- N C
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <curl/curl.h>

static size_t
discard(char *p, size_t s, size_t n, void *u)
{
	return s * n;
}

static double
now_s(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return tv.tv_sec + tv.tv_usec / 1e6;
}

int
main(int argc, char **argv)
{
	CURLM	   *multi;
	CURL	  **easy;
	struct curl_slist *hdr = NULL;
	int			n, c, started = 0, done = 0, failed = 0, i, running;
	int			get;
	double		t0,
				elapsed,
				cpu;
	struct rusage ru;

	if (argc != 5)
	{
		fprintf(stderr, "usage: loadgen URL BODY|- N C\n");
		return 2;
	}
	get = strcmp(argv[2], "-") == 0;
	n = atoi(argv[3]);
	c = atoi(argv[4]);
	curl_global_init(CURL_GLOBAL_ALL);
	multi = curl_multi_init();
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) c);
	hdr = curl_slist_append(hdr, "Content-Type: text/xml; charset=utf-8");
	hdr = curl_slist_append(hdr, "Expect:");
	easy = calloc(c, sizeof(CURL *));
	for (i = 0; i < c; i++)
	{
		easy[i] = curl_easy_init();
		curl_easy_setopt(easy[i], CURLOPT_URL, argv[1]);
		if (!get)
		{
			curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, argv[2]);
			curl_easy_setopt(easy[i], CURLOPT_HTTPHEADER, hdr);
			curl_easy_setopt(easy[i], CURLOPT_USERPWD, "user:secret");
		}
		curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, discard);
		curl_easy_setopt(easy[i], CURLOPT_NOSIGNAL, 1L);
	}
	t0 = now_s();
	for (i = 0; i < c && started < n; i++, started++)
		curl_multi_add_handle(multi, easy[i]);
	while (done < n)
	{
		CURLMsg    *m;
		int			left;

		curl_multi_perform(multi, &running);
		while ((m = curl_multi_info_read(multi, &left)) != NULL)
		{
			long		code = 0;

			if (m->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
			if (m->data.result != CURLE_OK || code < 200 || code > 299)
				failed++;
			done++;
			curl_multi_remove_handle(multi, m->easy_handle);
			if (started < n)
			{
				curl_multi_add_handle(multi, m->easy_handle);
				started++;
			}
		}
		if (done < n)
			curl_multi_poll(multi, NULL, 0, 1000, NULL);
	}
	elapsed = now_s() - t0;
	if (getrusage(RUSAGE_SELF, &ru) != 0)
	{
		perror("loadgen: getrusage");
		return 1;
	}
	cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
		ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	printf("%.0f %.1f %.2f\n", n / elapsed, cpu * 1e6 / n, cpu / elapsed);
	if (failed)
		fprintf(stderr, "loadgen: %d requests failed\n", failed);
	return failed ? 1 : 0;
}
