"""Header fields as real MTAs write them, for the corpus tests.

Received chains read newest first, as in a message. ``Tue, 14 May 2024`` throughout; addresses from
the documentation ranges (RFC 5737, RFC 3849) except where a real provider's format needs its own.
"""

from __future__ import annotations

# --- the user's own chain: Postfix MX (mx.example.org, 192.0.2.10) → Dovecot LMTP ---------------

DOVECOT_LMTP = """Received: from mx.example.org ([192.0.2.10])
\tby imap.example.org with LMTP
\tid mJ0VKOlwQ2Z8UgAAB8jVbw
\t(envelope-from <alice@sender.example>)
\tfor <bob@example.org>; Tue, 14 May 2024 10:00:01 +0200"""

DOVECOT_LMTP_SOCKET = """Received: from mx.example.org
\tby imap.example.org with LMTP
\tid mJ0VKOlwQ2Z8UgAAB8jVbw
\t(envelope-from <alice@sender.example>)
\tfor <bob@example.org>; Tue, 14 May 2024 10:00:01 +0200"""

POSTFIX_TLS13 = """Received: from mail.sender.example (mail.sender.example [198.51.100.7])
\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)
\t(No client certificate requested)
\tby mx.example.org (Postfix) with ESMTPS id 4VdXyZ1abcz9sT3
\tfor <bob@example.org>; Tue, 14 May 2024 10:00:00 +0200 (CEST)"""

POSTFIX_TLS12_OLD = """Received: from mail.sender.example (mail.sender.example [198.51.100.7])
\t(using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits))
\t(No client certificate requested)
\tby mx.example.org (Postfix) with ESMTPS id 3F1A2B3C4D
\tfor <bob@example.org>; Tue, 14 May 2024 10:00:00 +0200 (CEST)"""

POSTFIX_PLAIN = """Received: from mail.sender.example (mail.sender.example [198.51.100.7])
\tby mx.example.org (Postfix) with ESMTP id 4VdXyZ1abcz9sT3
\tfor <bob@example.org>; Tue, 14 May 2024 10:00:00 +0200 (CEST)"""

POSTFIX_SUBMISSION = """Received: from [192.168.1.20] (dsl-203-0-113-99.isp.example [203.0.113.99])
\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)
\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)
\t(No client certificate requested)
\t(Authenticated sender: bob)
\tby mx.example.org (Postfix) with ESMTPSA id 4VdY0b2cdez9sTb
\tfor <carol@example.org>; Tue, 14 May 2024 11:00:00 +0200 (CEST)"""

POSTFIX_PICKUP = """Received: by mx.example.org (Postfix, from userid 1000)
\tid 4VdY1c3defz9sTc; Tue, 14 May 2024 12:00:00 +0200 (CEST)"""

# amavisd-new between two Postfix smtpd instances, all on the MX.
AMAVIS_REINJECT = """Received: from localhost (localhost [127.0.0.1])
\tby mx.example.org (Postfix) with ESMTP id 4VdXyZ5xyzz9sT9
\tfor <bob@example.org>; Tue, 14 May 2024 10:00:01 +0200 (CEST)"""

AMAVIS = """Received: from mx.example.org ([127.0.0.1])
\tby localhost (mx.example.org [127.0.0.1]) (amavisd-new, port 10024)
\twith ESMTP id 2w6dBc3xYz1A for <bob@example.org>;
\tTue, 14 May 2024 10:00:01 +0200 (CEST)"""

# opendkim + opendmarc + policyd-spf on the MX, above its Received line.
TRUSTED_AR_PASS = """Authentication-Results: mx.example.org;
\tdkim=pass (2048-bit key; unprotected) header.d=sender.example header.i=@sender.example
\t header.a=rsa-sha256 header.s=mail header.b=AbCdEf12;
\tdkim-atps=neutral"""

TRUSTED_DMARC_PASS = """Authentication-Results: mx.example.org; dmarc=pass (p=reject dis=none)
\theader.from=sender.example"""

TRUSTED_SPF_PASS = """Authentication-Results: mx.example.org; spf=pass (sender SPF authorized)
\tsmtp.mailfrom=sender.example"""

TRUSTED_AR_FAIL = """Authentication-Results: mx.example.org;
\tspf=fail smtp.mailfrom=bank.example;
\tdkim=none;
\tdmarc=fail (p=reject dis=reject) header.from=bank.example"""

# The sender's own hops: below the boundary, counted only.
SENDER_SUBMISSION = """Received: from [10.1.2.3] (laptop.sender.example [10.1.2.3])
\t(Authenticated sender: alice)
\tby mail.sender.example (Postfix) with ESMTPSA id 4VdXy01aaaz1
\tfor <bob@example.org>; Tue, 14 May 2024 09:59:59 +0200 (CEST)"""

# --- Exim as the user's MX ----------------------------------------------------------------------

EXIM_TLS13 = """Received: from mail.sender.example ([198.51.100.7])
\tby mx.example.org with esmtps  (TLS1.3) tls TLS_AES_256_GCM_SHA384
\t(Exim 4.96)
\t(envelope-from <alice@sender.example>)
\tid 1s6q2X-0005Zk-2n
\tfor bob@example.org;
\tTue, 14 May 2024 10:00:00 +0200"""

EXIM_TLS12_OLD = """Received: from mail.sender.example ([198.51.100.7] helo=smtp.sender.example)
\tby mx.example.org with esmtps (TLS1.2:ECDHE-RSA-AES256-GCM-SHA384:256)
\t(Exim 4.92)
\t(envelope-from <alice@sender.example>)
\tid 1hXyZ3-0001ab-Cd
\tfor bob@example.org; Tue, 14 May 2024 10:00:00 +0200"""

EXIM_PLAIN = """Received: from [198.51.100.7] (helo=smtp.sender.example)
\tby mx.example.org with esmtp (Exim 4.96)
\t(envelope-from <alice@sender.example>)
\tid 1s6q2X-0005Zk-2n
\tfor bob@example.org; Tue, 14 May 2024 10:00:00 +0200"""

# --- Sendmail as the user's MX ------------------------------------------------------------------

SENDMAIL_TLS12 = """Received: from mail.sender.example (mail.sender.example [198.51.100.7])
\tby mx.example.org (8.17.1/8.17.1) with ESMTPS id 44E80ab1012345
\t(version=TLSv1.2 cipher=ECDHE-RSA-AES256-GCM-SHA384 bits=256 verify=NOT)
\tfor <bob@example.org>; Tue, 14 May 2024 10:00:00 +0200"""

SENDMAIL_PLAIN = """Received: from mail.sender.example (mail.sender.example [198.51.100.7])
\tby mx.example.org (8.17.1/8.17.1) with ESMTP id 44E80ab1012345
\tfor <bob@example.org>; Tue, 14 May 2024 10:00:00 +0200"""

# --- Exchange on premises (corp.example.org, 10.20.0.0/24) --------------------------------------

EXCHANGE_INTERNAL = """Received: from EXCH01.corp.example.org (10.20.0.5) by EXCH02.corp.example.org
 (10.20.0.6) with Microsoft SMTP Server (version=TLS1_2,
 cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.2.1258.12; Tue, 14 May
 2024 10:00:01 +0200"""

EXCHANGE_EDGE_TLS12 = """Received: from mail.sender.example (198.51.100.7) by EXCH01.corp.example.org
 (10.20.0.5) with Microsoft SMTP Server (version=TLS1_2,
 cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.2.1258.12 via Frontend
 Transport; Tue, 14 May 2024 10:00:00 +0200"""

EXCHANGE_EDGE_PLAIN = """Received: from mail.sender.example (198.51.100.7) by EXCH01.corp.example.org
 (10.20.0.5) with Microsoft SMTP Server id 15.2.1258.12 via Frontend Transport;
 Tue, 14 May 2024 10:00:00 +0200"""

# Microsoft 365 hops of a sender on outlook.com: below the boundary.
OUTLOOK_SENDER_HOPS = (
    """Received: from AM0PR02MB1234.eurprd02.prod.outlook.com (2603:10a6:208:1::12) by
 AM6PR02MB5678.eurprd02.prod.outlook.com (2603:10a6:20b:2::34) with Microsoft
 SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id
 15.20.7544.40; Tue, 14 May 2024 07:59:59 +0000""",
    """Received: from AM0PR02MB1234.eurprd02.prod.outlook.com
 ([fe80::1234:5678:9abc:def0]) by AM0PR02MB1234.eurprd02.prod.outlook.com
 ([fe80::1234:5678:9abc:def0%5]) with mapi id 15.20.7544.041; Tue, 14 May 2024
 07:59:58 +0000""",
)

# --- Gmail as the user's provider ---------------------------------------------------------------

GMAIL_TOP = """Received: by 2002:a05:7208:3104:b0:7d:1234:5678 with SMTP id o4csp2841234rbc;
        Tue, 14 May 2024 01:00:01 -0700 (PDT)"""

GMAIL_X_RECEIVED = """X-Received: by 2002:a05:620a:1234:b0:790:abcd:ef01 with SMTP id x4mr1234567qkn.12.1715673601234;
        Tue, 14 May 2024 01:00:01 -0700 (PDT)"""

GMAIL_ARC_AR = """ARC-Authentication-Results: i=1; mx.google.com;
       dkim=pass header.i=@sender.example header.s=mail header.b=AbCdEf12;
       spf=pass (google.com: domain of alice@sender.example designates 203.0.113.5 as permitted sender) smtp.mailfrom=alice@sender.example;
       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=sender.example"""

GMAIL_MX_TLS13 = """Received: from mail.sender.example (mail.sender.example. [203.0.113.5])
        by mx.google.com with ESMTPS id d75a77b69052e-43df5b0a1c2si1234567qtb.321.2024.05.14.01.00.00
        for <bob@gmail.com>
        (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256);
        Tue, 14 May 2024 01:00:01 -0700 (PDT)"""

GMAIL_MX_INTERNAL = """Received: from mail-sor-f41.google.com (mail-sor-f41.google.com. [209.85.220.41])
        by mx.google.com with SMTPS id a640c23a62f3a-a5a5c1234sor1234567166b.12.2024.05.14.01.00.00
        for <bob@gmail.com>
        (Google Transport Security);
        Tue, 14 May 2024 01:00:01 -0700 (PDT)"""

GMAIL_MX_PLAIN = """Received: from mail.sender.example (mail.sender.example. [203.0.113.5])
        by mx.google.com with ESMTP id d75a77b69052e-43df5b0a1c2si1234567qtb.321.2024.05.14.01.00.00
        for <bob@gmail.com>;
        Tue, 14 May 2024 01:00:01 -0700 (PDT)"""

GMAIL_RECEIVED_SPF = """Received-SPF: pass (google.com: domain of alice@sender.example designates 203.0.113.5 as permitted sender) client-ip=203.0.113.5;"""

GMAIL_AR = """Authentication-Results: mx.google.com;
       dkim=pass header.i=@sender.example header.s=mail header.b=AbCdEf12;
       spf=pass (google.com: domain of alice@sender.example designates 203.0.113.5 as permitted sender) smtp.mailfrom=alice@sender.example;
       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=sender.example"""

# --- the message itself -------------------------------------------------------------------------

DKIM_SIGNATURE = """DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender.example;
\ts=mail; t=1715673600; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;
\th=From:To:Subject:Date:Message-ID;
\tb=AbCdEf12Gh34Ij56Kl78Mn90Op12Qr34St56Uv78Wx90Yz12Ab34Cd56Ef78Gh90Ij12Kl34Mn56Op78Qr90"""

FROM_ALICE = 'From: "Alice Example" <alice@sender.example>'
TO_BOB = "To: Bob <bob@example.org>"
PLAIN_TEXT = [
    "Subject: Lunch",
    "Date: Tue, 14 May 2024 09:59:58 +0200",
    "Message-ID: <20240514075958.1234@sender.example>",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 8bit",
]
