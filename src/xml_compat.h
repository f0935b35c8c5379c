/*-------------------------------------------------------------------------
 *
 * xml_compat.h
 *	  The one place that knows which libxml2 smsdispatch is built against.
 *
 * libxml2 2.12 (Debian unstable) made the error a structured error handler
 * receives const; 2.9 (Debian 12 and 13) passes it mutable. Handlers take
 * an SmsXmlError so that they fit the xmlStructuredErrorFunc of either.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SMSDISPATCH_XML_COMPAT_H
#define SMSDISPATCH_XML_COMPAT_H

#include <libxml/xmlversion.h>
#include <libxml/xmlerror.h>

#if LIBXML_VERSION >= 21200
typedef const xmlError *SmsXmlError;
#else
typedef xmlError *SmsXmlError;
#endif

#endif							/* SMSDISPATCH_XML_COMPAT_H */
